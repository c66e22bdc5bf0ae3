"""A small character-level GPT, trained on text that ships with NumPy, then sampled.

The text is NumPy's ``LICENSE.txt`` (NumPy's BSD license followed by the licenses of the code
it bundles, about 47,000 characters), found through the installed package's metadata; with
``--text zen`` it is the Zen of Python instead, read from the standard library's ``this``
module. Every character is a token.

The network is a GPT in miniature, built from library layers:

- ``Embedding`` for the tokens and another for the positions (both read integer inputs);
- blocks of ``LayerNorm`` -> ``MultiheadAttention(is_causal=True)`` -> residual ``Add``, then
  ``LayerNorm`` -> ``Linear`` -> ``Gelu`` -> ``Linear`` -> residual ``Add``;
- a final ``LayerNorm`` and a ``Linear`` to one logit per character.

The sequence length is a symbol, so the model compiled for inference generates from prompts of
any length up to the context size.

    python examples/gpt_text.py                       # 500 steps on PyTorch
    python examples/gpt_text.py --steps 2000 --layers 4 --dim 128
    python examples/gpt_text.py --backend jax --small
"""

from __future__ import annotations

import ast
import codecs
import importlib.metadata
import importlib.util
import math
import sys
import time

import numpy as np
from _common import example_parser, limit_threads, make_backend

import mithril as ml
from mithril import IOKey
from mithril.models import (
    Add,
    Buffer,
    Embedding,
    Gelu,
    LayerNorm,
    Linear,
    Model,
    MultiheadAttention,
)


# ---- the text ---------------------------------------------------------------------------------
def numpy_license() -> str:
    """NumPy's LICENSE.txt, from the installed distribution's files."""
    files = importlib.metadata.distribution("numpy").files or []
    candidates = [f for f in files if f.name == "LICENSE.txt" and "licenses/numpy" not in str(f)]
    if not candidates:
        raise SystemExit("NumPy's LICENSE.txt is not installed here; use --text zen")
    return min(candidates, key=lambda f: len(str(f))).read_text(encoding="utf-8")


def zen_of_python() -> str:
    """The Zen of Python, decoded from the source of ``this`` (importing it would print it)."""
    spec = importlib.util.find_spec("this")
    if spec is None or spec.origin is None:
        raise SystemExit("the standard library's 'this' module is missing; use --text license")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "s" and isinstance(node.value, ast.Constant)):
            return codecs.decode(node.value.value, "rot13")
    raise SystemExit("could not read the text of 'this'")


# ---- the model --------------------------------------------------------------------------------
def transformer_block(dim: int, heads: int, name: str) -> Model:
    """Pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))."""
    block = Model(name=name)
    block |= LayerNorm(dim, name="ln_1")(input="input", output="normed_1")
    block |= MultiheadAttention(dim, heads, is_causal=True, name="attn")(
        query="normed_1", key="normed_1", value="normed_1", output="attended")
    block |= Add()(left="input", right="attended", output="residual")
    block |= LayerNorm(dim, name="ln_2")(input="residual", output="normed_2")
    block |= Linear(4 * dim, name="mlp_up")(input="normed_2", output="hidden")
    block |= Gelu()(input="hidden", output="activated")
    block |= Linear(dim, name="mlp_down")(input="activated", output="mlp_out")
    block |= Add()(left="residual", right="mlp_out", output="output")
    return block


def create_gpt(vocab: int, context: int, dim: int, heads: int, layers: int) -> Model:
    gpt = Model()
    gpt |= Embedding(vocab, dim, name="token_embedding")(
        input=IOKey("tokens", shape=["B", "T"]), output="token_vectors")
    gpt |= Embedding(context, dim, name="position_embedding")(
        input=IOKey("positions", shape=[1, "T"]), output="position_vectors")
    gpt |= Add()(left="token_vectors", right="position_vectors", output="x_0")
    x = "x_0"
    for i in range(layers):
        gpt |= transformer_block(dim, heads, name=f"block_{i}")(input=x, output=f"x_{i + 1}")
        x = f"x_{i + 1}"
    gpt |= LayerNorm(dim, name="ln_f")(input=x, output="final")
    gpt |= Linear(vocab, name="lm_head")(input="final", output=IOKey("logits", expose=True))
    # (B, T, vocab) -> (B * T, vocab) for the loss, with the connection algebra
    gpt |= Buffer()(input=gpt.logits.reshape((-1, vocab)), output=IOKey("flat_logits"))
    return gpt


# ---- training and sampling --------------------------------------------------------------------
def sample(compiled, params, backend, prompt: list[int], length: int, context: int,
           temperature: float, rng: np.random.Generator) -> list[int]:
    """Extend ``prompt`` by ``length`` tokens, one at a time, from the last ``context``."""
    tokens = list(prompt)
    for _ in range(length):
        window = tokens[-context:]
        data = {"tokens": backend.array(np.array([window], dtype=np.int64)),
                "positions": backend.array(np.arange(len(window), dtype=np.int64)[None])}
        logits = backend.to_numpy(compiled.evaluate(params, data)["logits"])[0, -1]
        logits = logits.astype(np.float64) / temperature
        probs = np.exp(logits - logits.max())
        tokens.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--text", choices=["license", "zen"], default="license",
                        help="NumPy's LICENSE.txt (default) or the Zen of Python")
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--context", type=int, default=32, help="context length (default 32)")
    parser.add_argument("--dim", type=int, default=64, help="embedding size (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (3e-3)")
    parser.add_argument("--sample-length", type=int, default=200,
                        help="characters to generate (default 200)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="sampling temperature (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed for batches and parameters")
    parser.add_argument("--small", action="store_true",
                        help="a quick check: a tiny model, 5 steps, 40 generated characters")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.small:
        args.steps, args.batch_size, args.context = 5, 8, 16
        args.dim, args.heads, args.layers, args.sample_length = 32, 2, 1, 40

    text = numpy_license() if args.text == "license" else zen_of_python()
    chars = sorted(set(text))
    vocab = len(chars)
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    print(f"text: {'NumPy LICENSE.txt' if args.text == 'license' else 'the Zen of Python'}, "
          f"{len(text):,} characters, {vocab} distinct; {len(train_data):,} for training, "
          f"{len(val_data):,} for validation")

    backend = make_backend(args.backend)
    gpt = create_gpt(vocab, args.context, args.dim, args.heads, args.layers)
    start = time.perf_counter()
    train = ml.compile(gpt, backend, discard_keys=["logits"])
    # for validation and sampling: no gradient code, any sequence length up to the context
    generate = ml.compile(gpt, backend, inference=True)
    params = train.randomize_params(seed=args.seed)
    n_params = sum(int(np.prod(v.shape)) for v in params.values())
    print(f"GPT: {args.layers} blocks, {args.heads} heads, width {args.dim}, context "
          f"{args.context}: {n_params:,} parameters; compiled for {args.backend} in "
          f"{time.perf_counter() - start:.1f}s")

    rng = np.random.default_rng(args.seed)
    prompt = [index[c] for c in text[:8]]
    before = sample(generate, params, backend, prompt, args.sample_length // 4, args.context,
                    args.temperature, rng)
    print(f"untrained sample: {''.join(chars[i] for i in before)!r}")
    print(f"cross-entropy of uniform guessing: {math.log(vocab):.3f} nats per character")

    positions = backend.array(np.arange(args.context, dtype=np.int64)[None])

    def batch(source: np.ndarray) -> tuple[dict, object]:
        starts = rng.integers(0, len(source) - args.context - 1, size=args.batch_size)
        x = np.stack([source[s:s + args.context] for s in starts])
        y = np.stack([source[s + 1:s + args.context + 1] for s in starts])
        return ({"tokens": backend.array(x), "positions": positions},
                backend.array(y.reshape(-1)))

    schedule = ml.LinearWarmup(ml.CosineAnnealing(args.lr, total_steps=args.steps,
                                                  min_lr=args.lr / 10),
                               warmup_steps=min(20, args.steps))
    optimizer = ml.AdamW(learning_rate=schedule, weight_decay=0.01, max_grad_norm=1.0)
    optimizer_state = optimizer.init(params)
    start = time.perf_counter()
    report_every = max(1, args.steps // 5)
    for step in range(1, args.steps + 1):
        inputs, targets = batch(train_data)
        logits = train.evaluate(params, inputs)["flat_logits"]
        loss = backend.cross_entropy(logits, targets)
        grad = backend.cross_entropy_grad(logits, targets)
        _, gradients = train.evaluate(params, inputs, {"flat_logits": grad})
        params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
        if step % report_every == 0 or step == args.steps:
            val_inputs, val_targets = batch(val_data)
            val_logits = generate.evaluate(params, val_inputs)["flat_logits"]
            val_loss = backend.cross_entropy(val_logits, val_targets)
            print(f"step {step:5d}/{args.steps}: train loss {float(backend.to_numpy(loss)):.3f}, "
                  f"validation loss {float(backend.to_numpy(val_loss)):.3f} "
                  f"({time.perf_counter() - start:.1f}s)")

    after = sample(generate, params, backend, prompt, args.sample_length, args.context,
                   args.temperature, rng)
    print("trained sample:")
    print("".join(chars[i] for i in after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
