"""nbgrader's configuration for this course: nbgrader reads it when run from the repository root.

`scalesim-course release` and `scalesim-course grade` read it too, so the CLI, the formgrader
and the learners' self-grading all release and grade the same way.
"""
import copy
import os

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    OverwriteCells,
    OverwriteKernelspec,
)

from scalesim_course._nbgrader import ScrubHiddenTests

c = get_config()  # noqa: F821 - provided by the config loader

# The course folder is this repository, wherever it is checked out.
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "scalesim-course"
c.CourseDirectory.source_directory = "solutions"   # instructor versions, with solutions
c.CourseDirectory.release_directory = "notebooks"  # learner versions, generated

# What learners see in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Seconds each cell of a submission may run on the hub; a cell past it is interrupted and its
# exercise scores 0 (the rest is still graded).  The course's longest cell takes under 10 s on a
# busy 2-core machine (tests/test_class_flow.py checks every measured cell stays under a
# quarter of this).  An endless loop costs this once per cell that calls the looping function
# (two or three), so keep it short: 60 s, not nbgrader's 120.  `--Execute.timeout=S` overrides
# it for one run; `scalesim-course grade` sets its own limits per cell.
c.Execute.timeout = 60
# Keep the kernel's own start-up warnings out of the graders' logs.
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
# Stop the kernel at once when a notebook is graded: the scores are in, and a graceful stop
# waits on the learner's imports to wind down (1.3 s of every grading, measured here).
c.Execute.shutdown_kernel = "immediate"

# Feedback shows visible tests and one-line errors, never hidden tests or their tracebacks.
c.GenerateFeedback.preprocessors = [GetGrades, ScrubHiddenTests, CSSHTMLHeaderPreprocessor]

# A learner who deletes a test cell gets it back, hidden tests included, as
# `scalesim-course grade` does: the hub and self-grading give the same score, and nothing is
# left for manual grading.
c.OverwriteCells.add_missing_cells = True


class OverwriteCellsQuietly(OverwriteCells):
    """OverwriteCells without a "checksum has changed" warning for every untouched test cell.

    A learner's copy of a test cell lacks its hidden tests, so nbgrader's checksum never
    matches and it warns for every test cell of every submission.  Where the cell is exactly as
    released, put the hidden tests back silently; a cell the learner edited still warns (and,
    as always, the original is graded).
    """

    def preprocess_cell(self, cell, resources, cell_index):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id and cell.get("metadata", {}).get("nbgrader", {}).get("locked"):
            try:
                source = self.gradebook.find_source_cell(grade_id, self.notebook_id,
                                                         self.assignment_id)
            except Exception:  # noqa: BLE001 - unknown cells are reported by the parent class
                source = None
            if source is not None and source.locked:
                released = copy.deepcopy(cell)
                released.source = source.source
                released, _ = ClearHiddenTests().preprocess_cell(released, {}, cell_index)
                if released.source.strip() == cell.source.strip():
                    cell.source = source.source
        return super().preprocess_cell(cell, resources, cell_index)


c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec,
                                      OverwriteCellsQuietly, CheckCellMetadata]
