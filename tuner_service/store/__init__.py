"""SQL storage of data sets, studies, trials and epochs; the only package that speaks SQL."""

from tuner_service.store.hypermodels import HypermodelOffer
from tuner_service.store.records import (
    DatasetRecord,
    EpochRecord,
    JobRecord,
    Page,
    StudyRecord,
    TrialControl,
    TrialPoint,
    TrialRecord,
)
from tuner_service.store.store import STUDY_STATUSES, TRIAL_SORTS, TRIAL_STATUSES, Store, StudyTransaction

__all__ = [
    "DatasetRecord",
    "EpochRecord",
    "HypermodelOffer",
    "JobRecord",
    "Page",
    "STUDY_STATUSES",
    "Store",
    "StudyRecord",
    "StudyTransaction",
    "TRIAL_SORTS",
    "TRIAL_STATUSES",
    "TrialControl",
    "TrialPoint",
    "TrialRecord",
]
