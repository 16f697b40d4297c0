"""What a sweep step leaves visible: the progress bar (to show the sweep), and no callback hook."""

from functools import partial

from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from models import Classifier, loader
from models import fit as seeded_fit

from lightning_lrsweep import LRSweep


class SeesTheBar(Callback):
    """Records, at each step of training, which progress bar the trainer finds."""

    def __init__(self) -> None:
        self.found: list[object] = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.found.append(trainer.progress_bar_callback)


class HookedBar(TQDMProgressBar):
    """A progress bar that also counts backward passes: a step hook of its own."""

    backwards = 0

    def on_after_backward(self, trainer, pl_module):
        self.backwards += 1


def fit(callbacks, model=Classifier):
    data = loader(n=128)
    return seeded_fit(partial(model, lr=0.01), callbacks, seed=3, epochs=2, data=data, enable_progress_bar=True)


class ModuleSeesTheBar(Classifier):
    """Records, at each step of training and of every sweep, which progress bar the trainer finds."""

    def __init__(self, lr: float) -> None:
        super().__init__(lr=lr)
        self.found: list[object] = []

    def on_before_backward(self, loss):
        self.found.append(self.trainer.progress_bar_callback)


def test_the_progress_bar_stays_visible_during_sweep_steps_and_no_hook_fires():
    bar, seen = TQDMProgressBar(), SeesTheBar()
    sweeps = LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10)
    model, t = fit([sweeps, bar, seen], model=ModuleSeesTheBar)
    sweep_steps = sum(len(record.result.lrs) for record in sweeps.history)
    assert len(model.found) == sweep_steps + t.global_step  # the module's own hook runs in sweep steps too
    assert all(found is bar for found in model.found)  # ...and the bar finds itself there (Rich's metrics column must)
    assert len(seen.found) == t.global_step == 8  # another callback's hook never runs in a sweep step


def test_a_progress_bar_with_a_step_hook_is_hidden_during_sweep_steps():
    bar = HookedBar()
    _, t = fit([LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10), bar])
    assert bar.backwards == t.global_step == 8
