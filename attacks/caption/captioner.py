"""CNN-RNN captioners: a CNN encoder whose feature grid (N, C, H, W) is the one tensor the RNN decoder reads.

Two architectures, so transfer between them can be measured:

* ``AttentionGRUCaptioner``: a conv + BN encoder with two stride-2 layers (grid C x H/4 x W/4; on MNIST scenes
  64 x 4 x 12) or a given (pretrained) backbone, and a GRU decoder with additive (Bahdanau) attention over the grid's cells at every step
  (Show-Attend-Tell style), whose attention scores also see a learned embedding of each cell's position (captions
  list the objects in reading order);
* ``FlatLSTMCaptioner``: three 5x5/3x3 conv + max-pool stages (grid C x H/8 x W/8; on MNIST 32 x 2 x 6), or a
  given backbone and one own stage, flattened; a linear map of the flat grid gives the LSTM's initial state and a second one a context vector fed
  with every input token (Show-and-Tell style with a per-step context).

Both take the scene set's :class:`~attacks.caption.grammar.CaptionGrammar` (vocabulary, caption length) and image
shape, and their layer widths, so the same code serves the MNIST and the natural-image scenes.

Both expose ``encode(x)`` (the grid), ``decode_logits(grid, tokens)`` (teacher forcing), ``greedy(grid)`` and
``beam(grid, width)``; ``forward(x, tokens)`` is encode + teacher-forced logits. Feature-mimicking attacks must
match ``encode``'s output, the exact tensor the decoder consumes (seeds.md section 2 (e)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attacks.caption.grammar import BOS_ID, EOS_ID, PAD_ID, CaptionGrammar
from attacks.caption.scenes import MNIST_GRAMMAR
from rbl_core.data import index_batches
from rbl_core.training import fit, make_optimizer


class Captioner(nn.Module):
    """Shared decoding: subclasses give ``encode``, ``init_state`` and ``step``."""

    def __init__(self, grammar: CaptionGrammar) -> None:
        super().__init__()
        self.grammar = grammar
        self.vocab_size = len(grammar.words)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The feature grid (N, C, H, W) of images ``x`` (N, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def init_state(self, grid: torch.Tensor):  # noqa: ANN201 - the RNN's own state type
        """The decoder's initial state for ``grid``."""
        raise NotImplementedError

    def step(self, grid: torch.Tensor, token: torch.Tensor, state):  # noqa: ANN001, ANN201
        """Logits (N, V) for the next token after ``token`` (N,), and the new state."""
        raise NotImplementedError

    def decode_logits(self, grid: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (N, T-1, V): step t reads ``tokens[:, t]`` and predicts ``tokens[:, t+1]``."""
        state, out = self.init_state(grid), []
        for t in range(tokens.shape[1] - 1):
            logits, state = self.step(grid, tokens[:, t], state)
            out.append(logits)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of ``tokens`` given images ``x``."""
        return self.decode_logits(self.encode(x), tokens)

    @torch.no_grad()
    def greedy(self, grid: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Greedy token ids (N, max_len; default the grammar's): <bos>, the argmax words, <eos>, then <pad>."""
        max_len = max_len or self.grammar.max_len
        n = grid.shape[0]
        out = torch.full((n, max_len), PAD_ID, dtype=torch.long)
        out[:, 0] = BOS_ID
        token, state = out[:, 0], self.init_state(grid)
        done = torch.zeros(n, dtype=torch.bool)
        for t in range(1, max_len):
            logits, state = self.step(grid, token, state)
            token = logits.argmax(dim=1)
            token = torch.where(done, torch.full_like(token, PAD_ID), token)
            out[:, t] = token
            done |= token == EOS_ID
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def beam(self, grid: torch.Tensor, width: int = 3, max_len: int | None = None) -> torch.Tensor:
        """Beam-search token ids (N, max_len; default the grammar's), one image at a time, by total log-probability."""
        max_len = max_len or self.grammar.max_len
        if width < 1:
            raise ValueError(f"beam width must be >= 1, got {width}")
        return torch.stack([self._beam_one(grid[i:i + 1], width, max_len) for i in range(grid.shape[0])])

    def _beam_one(self, grid: torch.Tensor, width: int, max_len: int) -> torch.Tensor:
        beams = [([BOS_ID], 0.0, self.init_state(grid))]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_len - 1):
            candidates = []
            for seq, score, state in beams:
                logits, new_state = self.step(grid, torch.tensor([seq[-1]]), state)
                logp = F.log_softmax(logits[0], dim=0)
                top = logp.topk(width)
                for lp, tok in zip(top.values.tolist(), top.indices.tolist()):
                    candidates.append((seq + [tok], score + lp, new_state))
            candidates.sort(key=lambda c: c[1], reverse=True)
            beams = []
            for seq, score, state in candidates[:width]:
                if seq[-1] == EOS_ID:
                    finished.append((seq, score))
                else:
                    beams.append((seq, score, state))
            if not beams:
                break
        finished += [(seq, score) for seq, score, _ in beams]
        best = max(finished, key=lambda c: c[1])[0][:max_len]
        return torch.tensor(best + [PAD_ID] * (max_len - len(best)), dtype=torch.long)


@torch.no_grad()
def _grid_shape(encoder: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(C, H, W) of the grid ``encoder`` makes of one image (eval mode: BatchNorm must not see a batch of one)."""
    was_training = encoder.training
    out = encoder.eval()(torch.zeros(1, *image_shape))
    encoder.train(was_training)
    return tuple(out.shape[1:])


class AttentionGRUCaptioner(Captioner):
    """Conv encoder (own layers, grid C x H/4 x W/4, or a given backbone) + GRU decoder attending over the grid cells."""

    def __init__(self, grammar: CaptionGrammar = MNIST_GRAMMAR, image_shape: tuple[int, int, int] = (3, 16, 48),
                 layers: tuple[tuple[int, int], ...] = ((32, 1), (64, 2), (64, 2)), embed: int = 32,
                 hidden: int = 128, backbone: nn.Module | None = None) -> None:
        super().__init__(grammar)
        if backbone is None:
            convs, c_in = [], image_shape[0]
            for c_out, stride in layers:   # (channels, stride) per conv + BN + ReLU layer
                convs += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
            backbone = nn.Sequential(*convs)
        self.encoder = backbone
        channels, grid_h, grid_w = _grid_shape(backbone, image_shape)
        cells = grid_h * grid_w
        self.embed = nn.Embedding(self.vocab_size, embed)
        self.init_h = nn.Linear(channels, hidden)
        self.att_feat, self.att_hid = nn.Linear(channels, hidden), nn.Linear(hidden, hidden)
        self.att_out = nn.Linear(hidden, 1)
        # Where each cell is: content alone cannot say which object comes next (left to right).
        self.att_pos = nn.Parameter(torch.zeros(1, cells, hidden))
        self.rnn = nn.GRUCell(embed + channels, hidden)
        self.out = nn.Linear(hidden + channels, self.vocab_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.encoder(x)

    def init_state(self, grid: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.tanh(self.init_h(grid.mean(dim=(2, 3))))

    def step(self, grid: torch.Tensor, token: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        cells = grid.flatten(2).transpose(1, 2)                       # (N, HW, C)
        scores = self.att_out(torch.tanh(self.att_feat(cells) + self.att_pos + self.att_hid(state).unsqueeze(1)))
        context = (scores.softmax(dim=1) * cells).sum(dim=1)          # (N, C)
        h = self.rnn(torch.cat([self.embed(token), context], dim=1), state)
        return self.out(torch.cat([h, context], dim=1)), h


class FlatLSTMCaptioner(Captioner):
    """5x5 conv + max-pool encoder (grid C x H/8 x W/8), flattened into the LSTM's initial state and a per-step context.

    With a ``backbone`` only the last stage (``widths[2]`` channels, then a max-pool) is the model's own.
    """

    def __init__(self, grammar: CaptionGrammar = MNIST_GRAMMAR, image_shape: tuple[int, int, int] = (3, 16, 48),
                 widths: tuple[int, int, int] = (24, 48, 32), embed: int = 32, hidden: int = 128,
                 backbone: nn.Module | None = None) -> None:
        super().__init__(grammar)
        w1, w2, c = widths
        if backbone is None:
            self.encoder = nn.Sequential(
                nn.Conv2d(image_shape[0], w1, 5, padding=2), nn.BatchNorm2d(w1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(w1, w2, 5, padding=2), nn.BatchNorm2d(w2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(w2, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2))
        else:
            # its own last stage on the shared backbone: a grid of a different shape than the attention model's
            c_in = _grid_shape(backbone, image_shape)[0]
            self.encoder = nn.Sequential(backbone, nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                         nn.MaxPool2d(2))
        grid = _grid_shape(self.encoder, image_shape)
        flat = grid[0] * grid[1] * grid[2]
        self.embed = nn.Embedding(self.vocab_size, embed)
        self.init_hc = nn.Linear(flat, 2 * hidden)
        self.context = nn.Linear(flat, hidden)
        self.rnn = nn.LSTMCell(embed + hidden, hidden)
        self.out = nn.Linear(hidden, self.vocab_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.encoder(x)

    def init_state(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: D102
        flat = grid.flatten(1)
        h, c = torch.tanh(self.init_hc(flat)).chunk(2, dim=1)
        return h, c, torch.relu(self.context(flat))

    def step(self, grid: torch.Tensor, token: torch.Tensor, state) -> tuple[torch.Tensor, tuple]:  # noqa: ANN001, D102
        h, c, ctx = state
        h, c = self.rnn(torch.cat([self.embed(token), ctx], dim=1), (h, c))
        return self.out(h), (h, c, ctx)


ARCHITECTURES = {"attention_gru": AttentionGRUCaptioner, "flat_lstm": FlatLSTMCaptioner}


def build_captioner(name: str, grammar: CaptionGrammar = MNIST_GRAMMAR,
                    image_shape: tuple[int, int, int] = (3, 16, 48), **sizes: object) -> Captioner:
    """An untrained captioner of architecture ``name`` for ``grammar`` and ``image_shape``.

    ``sizes``: layer widths, or ``backbone``, a (pretrained) conv trunk that replaces the encoder (attention) or
    its first stages (flat).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown captioner architecture {name!r}: choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](grammar, image_shape, **sizes)


def pretrain_encoder(model: Captioner, x: torch.Tensor, tokens: torch.Tensor, *, epochs: int, lr: float,
                     batch_size: int, seed: int) -> None:
    """Pretrain the encoder to name each object's content words (a linear probe on the flat grid, then dropped).

    Real captioners start from an ImageNet-pretrained CNN; a from-scratch decoder and encoder wait on each other
    (the decoder learns the grammar first and ignores uninformative features), so ours start from this stand-in.
    """
    labels = model.grammar.object_labels(tokens)
    with torch.no_grad():
        flat = model.encode(x[:1]).numel()
    probe = nn.Linear(flat, labels.shape[1] * model.vocab_size)
    gen = torch.Generator().manual_seed(seed)

    def loss(idx: torch.Tensor, _step: int) -> torch.Tensor:
        logits = probe(model.encode(x[idx]).flatten(1)).view(len(idx), labels.shape[1], model.vocab_size)
        # PAD_ID marks "no object here": a class of its own, so the probe also learns to count.
        return F.cross_entropy(logits.transpose(1, 2), labels[idx])

    fit(model, make_optimizer(list(model.parameters()) + list(probe.parameters()), lr=lr),
        lambda _: index_batches(len(x), batch_size, gen), loss, epochs=range(epochs))


def train_captioner(model: Captioner, x: torch.Tensor, tokens: torch.Tensor, *, epochs: int, lr: float,
                    batch_size: int, seed: int, pretrain_epochs: int = 0) -> Captioner:
    """Teacher-forced cross-entropy (pads ignored) with Adam and seeded shuffling; returns the model in eval mode.

    ``pretrain_epochs`` > 0 first pretrains the encoder with :func:`pretrain_encoder`.
    """
    if pretrain_epochs > 0:
        pretrain_encoder(model, x, tokens, epochs=pretrain_epochs, lr=lr, batch_size=batch_size, seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)

    def loss(idx: torch.Tensor, _step: int) -> torch.Tensor:
        logits = model(x[idx], tokens[idx])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[idx, 1:].reshape(-1), ignore_index=PAD_ID)

    fit(model, make_optimizer(model.parameters(), lr=lr), lambda _: index_batches(len(x), batch_size, gen), loss,
        epochs=range(epochs))
    return model
