"""README's collapse-study section and figure, from a committed study folder only.

Prints the Markdown that README.md holds between ``<!-- collapse-study:begin -->`` and
``<!-- collapse-study:end -->`` and writes the figure (``docs/figures/collapse_study.png``).
``tests/test_collapse_study.py`` regenerates the text from the same files and fails when README differs.

Usage::

    .venv/bin/python experiments/collapse_readme.py                      # print the section, write the figure
    .venv/bin/python experiments/collapse_readme.py --write-readme       # also replace README's section in place
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    from sigma_jax._io import write_text_atomic
    from sigma_jax.collapse.study_report import MARKERS, plot_study, readme_section

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="docs/results/collapse-study", help="study folder, relative to the repository")
    p.add_argument("--figure", default="docs/figures/collapse_study.png",
                   help="figure path, relative to the repository")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument("--write-readme", action="store_true", help="replace the section between README's markers")
    args = p.parse_args(argv)
    study = os.path.join(ROOT, args.study)
    md = readme_section(study, rel=args.study, figure=args.figure)
    if not args.no_figure:
        plot_study(study, os.path.join(ROOT, args.figure))
    if args.write_readme:
        path = os.path.join(ROOT, "README.md")
        text = open(path, encoding="utf-8").read()
        a, b = text.find(MARKERS[0]), text.find(MARKERS[1])
        if a < 0 or b < a:
            print(f"README.md lacks the markers {MARKERS}; add them where the section belongs.", file=sys.stderr)
            return 2
        write_text_atomic(path, text[: a + len(MARKERS[0])] + md + text[b:])
        print(f"README.md: collapse-study section replaced ({len(md.splitlines())} lines)", file=sys.stderr)
    else:
        sys.stdout.write(MARKERS[0] + md + MARKERS[1] + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
