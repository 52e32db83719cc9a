"""The one interface both parameterisation paths implement: documents in, one adapter each out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .adapter import DocAdapter
from .data import Passage


class DocumentEncoder(ABC):
    """Turns documents into :class:`DocAdapter` s for one base model.

    ``name`` and ``version`` go into every adapter and key the store, so adapters of the exact and
    the generated encoder (or of two versions of one) never shadow each other.
    """

    name: str
    version: str
    base_model: str
    # Documents per encode() call that the store hands over; > 1 lets an encoder batch its work
    # (the exact encoder batches augmentation) at the cost of redoing one chunk after a kill.
    chunk_size: int = 1
    # How this encoder's adapters of the top-k documents are combined when the caller does not
    # say (a name from merge.MERGE_METHODS). Trained adapters are summed (the reference recipe).
    merge: str = "sum"

    @property
    def key(self) -> str:
        """What the store files adapters under: adapters from other settings must never be reused."""
        return f"{self.name}-v{self.version}"

    @abstractmethod
    def encode(self, docs: Sequence[Passage], progress: bool = False) -> list[DocAdapter]:
        """One adapter per document, in order."""
