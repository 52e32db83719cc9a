"""Subprocess for store tests: encodes N fictional documents into a store with a deterministic fake
encoder (random factors seeded by the document), slowly enough to be killed midway."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import random_adapter, tiny_model  # noqa: E402
from hyperprag.adapter import content_hash  # noqa: E402
from hyperprag.data import Passage  # noqa: E402
from hyperprag.encoder import DocumentEncoder  # noqa: E402
from hyperprag.store import AdapterStore  # noqa: E402


class FakeEncoder(DocumentEncoder):
    name, version = "fake", "1"

    def __init__(self, model, delay: float):
        self.model, self.delay, self.base_model = model, delay, "tiny-llama"

    def encode(self, docs, progress=False):
        out = []
        for d in docs:
            time.sleep(self.delay)
            ad = random_adapter(self.model, seed=int(content_hash(d.text)[:8], 16), doc=d.text)
            ad.encoder = self.name
            out.append(ad)
        return out


def docs(n: int, offset: int = 0) -> list[Passage]:
    return [Passage(f"Doc {i}", f"Fictional document number {i} about the town of Vask.") for i in
            range(offset, offset + n)]


if __name__ == "__main__":
    store_dir, n, offset, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    AdapterStore(store_dir).get_or_encode(docs(n, offset), FakeEncoder(tiny_model(), delay), progress=False)
    print("finished")
