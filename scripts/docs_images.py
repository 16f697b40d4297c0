"""Make the docs' pictures from the demo run: python scripts/docs_images.py (writes docs/img/*.png)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lightning_lrsweep.demo import run_demo

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def main() -> None:
    """Run the demo; save its first sweep's two plots and the history plot under docs/img."""
    sweep = run_demo(out=IMG / "_demo", epochs=6, quiet=True)
    first = sweep.history[0].result
    for name, draw in (("loss.png", first.plot), ("rate_of_change.png", first.plot_rate_of_change)):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        draw(ax=ax)
        fig.tight_layout()
        fig.savefig(IMG / name, dpi=72)
        plt.close(fig)
    fig = sweep.plot_history()
    fig.set_size_inches(10, 3.6)
    fig.tight_layout()
    fig.savefig(IMG / "history.png", dpi=72)
    plt.close(fig)
    for path in (IMG / "_demo").iterdir():
        path.unlink()
    (IMG / "_demo").rmdir()


if __name__ == "__main__":
    main()
