"""Errors raised while locating, reading or downloading datasets."""

ACCEPTED_LAYOUTS = (
    "a ddnn pack file (*.npz written by `ddnn data pack`)",
    "the CIFAR-10 pickle layout (cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta)",
    "the CIFAR-100 pickle layout (cifar-100-python/ with train, test, meta)",
    "an ImageFolder tree (<root>/<split>/<class>/*.jpg|*.png)",
)


class DatasetError(ValueError):
    """A dataset path is missing, unreadable or in no layout ddnn accepts."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        accepted = "\n  - ".join(ACCEPTED_LAYOUTS)
        super().__init__(f"{self.path}: {problem}\nAccepted layouts:\n  - {accepted}")
