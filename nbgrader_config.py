"""nbgrader's configuration for this course: nbgrader reads it when run from the repository root.

`scalesim-course release` and `scalesim-course grade` read it too, so the CLI, the formgrader
and the learners' self-grading all release and grade the same way.
"""
import os

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import GetGrades

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

# Seconds each cell of a submission may run; a cell past it is interrupted and its exercise
# scores 0 (the rest is still graded).  `scalesim-course grade --timeout` overrides it.
c.Execute.timeout = 120
# Keep the kernel's own start-up warnings out of the graders' logs.
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]

# Feedback shows visible tests and one-line errors, never hidden tests or their tracebacks.
c.GenerateFeedback.preprocessors = [GetGrades, ScrubHiddenTests, CSSHTMLHeaderPreprocessor]
