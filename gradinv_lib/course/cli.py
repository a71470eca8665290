"""``gradinv course release`` (student versions through nbgrader's generate_assignment) and
``gradinv course grade DIR`` (nbgrader's autograde of DIR/<student>/<assignment>/). ``cli/app.py``
wires the command with :data:`COMMAND`."""

from __future__ import annotations


def add_cli_arguments(p) -> None:
    sub = p.add_subparsers(dest="course_command", required=True)
    release = sub.add_parser("release", help="build the student versions (solutions and hidden tests removed)")
    release.add_argument("--out", help="folder for <assignment>/<assignment>.ipynb (default: notebooks/course/release)")
    grade = sub.add_parser("grade", help="autograde a folder of submissions DIR/<student>/<assignment>/")
    grade.add_argument("submissions", metavar="DIR")
    grade.add_argument("--out", default="runs/course/grades",
                       help="folder for the autograded notebooks and grades.csv/json (default: %(default)s)")
    grade.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (default: %(default)s)")
    grade.add_argument("--json", action="store_true", help="print the grades as JSON")
    for parser in (release, grade):
        parser.add_argument("--source", help="the nbgrader source notebooks (default: notebooks/course/source)")
        parser.add_argument("--assignment", action="append", help="only this assignment (repeatable)")


def run_cli(args) -> int:
    from gradinv_lib.cli.setup import print_json
    from gradinv_lib.errors import InputError

    from .grader import grade, release

    if args.course_command == "release":
        for path in release(args.out, args.source, args.assignment):
            print(path)
        return 0
    if args.timeout < 1:
        raise InputError(f"--timeout: expected a positive number of seconds, found {args.timeout}")
    rows = grade(args.submissions, args.out, args.source, args.assignment, args.timeout)
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        failed = f", failed: {' '.join(r['failed'])}" if r["failed"] else ""
        print(f"{r['student']:16s} {r['assignment']:14s} {r['auto_points']:g}/{r['auto_max']:g} autograded"
              f" (+{r['manual_max']:g} by hand){failed}")
    print(f"-> {args.out}/grades.csv")
    return 0


COMMAND = (add_cli_arguments, run_cli, "course kit: release the student versions, autograde submissions (nbgrader)")
