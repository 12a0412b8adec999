import importlib.util

from ddnn.paths import REPO_ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("training_record", REPO_ROOT / "scripts" / "training_record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epochs_to_a_goal_counts_the_first_epoch_whose_final_exit_reaches_it():
    tr = load_script()
    history = [{"epoch": 1, "val_accuracy": {"final": 0.85}}, {"epoch": 2},  # not evaluated that epoch
               {"epoch": 3, "val_accuracy": {"final": 0.9001, "block2": 0.99}},
               {"epoch": 4, "val_accuracy": {"final": 0.89}}]
    assert tr.epochs_to(history, 0.90) == 3
    assert tr.epochs_to(history, 0.91) is None
    assert tr.epochs_to([], 0.5) is None
    assert tr.cpu_model()


def test_seconds_to_a_goal_adds_the_epochs_up_to_the_first_that_reaches_it():
    tr = load_script()
    history = [{"epoch": 1, "seconds": 10.0, "val_accuracy": {"final": 0.5}}, {"epoch": 2, "seconds": 12.5},
               {"epoch": 3, "seconds": 11.0, "val_accuracy": {"final": 0.886}}]
    assert tr.seconds_to(history, 0.886) == 33.5
    assert tr.seconds_to(history, 0.9) is None
