"""Data generators with known structure (teacher–student, separable, low-rank)."""

from dltheory.data.separable import separable_gaussian

__all__ = ["separable_gaussian"]
from dltheory.data.teacher import TeacherData, teacher_student  # noqa: E402

__all__ += ["TeacherData", "teacher_student"]
from dltheory.data.digits import digits  # noqa: E402

__all__ += ["digits"]
