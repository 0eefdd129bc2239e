"""`lmdynamics generate` through the real command on a tiny trained run: seeded sampling is reproducible,
greedy decoding is the argmax continuation, a tiny top-p is greedy, mixture-of-softmaxes checkpoints load with
their own head, and bad input is one line."""

import shutil
import subprocess
import sys

import pytest
import torch

from lmdynamics.models.heads import HeadSpec, build_causal_lm, load_causal_lm
from lmdynamics.probes.sources import load_tokenizer
from tests.helpers.cli import ROOT, cli_env, train_tiny

PROMPT = "Return the"


def generate(*args):
    """The console command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lmdynamics.cli", "generate", *map(str, args)], capture_output=True,
                          text=True, env=cli_env({"OMP_NUM_THREADS": "1"}), cwd=ROOT, timeout=300)


@pytest.fixture
def generate_here(capsys):
    """The same command in this process (lmdynamics.cli.main): (exit code, stdout, stderr)."""
    from lmdynamics.cli import main

    def call(*args):
        code = main(["generate", *map(str, args)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def samples(stdout: str) -> list[str]:
    """The texts printed after each '--- sample k of n' line."""
    out, current = [], None
    for line in stdout.splitlines():
        if line.startswith("--- sample "):
            if current is not None:
                out.append("\n".join(current))
            current = []
        elif current is not None:
            current.append(line)
    return out + (["\n".join(current)] if current is not None else [])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("generate"))


def argmax_continuation(checkpoint, prompt: str, n: int) -> str:
    """Greedy decoding written out: the most likely next token (among the tokenizer's ids) n times, or to end-of-text."""
    tok = load_tokenizer(checkpoint / "tokenizer.json")
    model = load_causal_lm(checkpoint).eval()
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids])).logits[0, -1, :len(tok)].argmax())
            ids.append(nxt)
            if nxt == eos:
                break
    return tok.decode(ids)


@pytest.mark.slow
def test_greedy_is_the_argmax_continuation_and_sampling_is_seeded(run, generate_here):
    last = sorted((run / "checkpoints").iterdir())[-1]
    greedy = generate("--checkpoint", run, "--prompt", PROMPT, "--max-new-tokens", 12, "--temperature", 0)
    assert greedy.returncode == 0, greedy.stderr
    assert samples(greedy.stdout) == [argmax_continuation(last, PROMPT, 12)]
    assert str(last) in greedy.stdout  # a run directory means its last checkpoint

    sampled = [generate_here("--checkpoint", f"{run}@6", "--prompt", PROMPT, "--max-new-tokens", 16, "--temperature",
                             1.0, "--top-p", 1.0, "--seed", seed, "--num-samples", 3) for seed in (3, 3, 4)]
    assert all(code == 0 for code, _, _ in sampled), sampled[0][2]
    first, again, other = (samples(out) for _, out, _ in sampled)
    assert len(first) == 3 and first == again  # the same seed, the same text
    assert first != other  # another seed, other text
    assert all(s.startswith(PROMPT) for s in first)
    # a nucleus of one token is the argmax: sampling with a tiny top-p is greedy decoding
    code, out, _ = generate_here("--checkpoint", last, "--prompt", PROMPT, "--max-new-tokens", 12, "--top-p", 1e-9,
                                 "--seed", 9)
    assert code == 0 and samples(out) == samples(greedy.stdout)


@pytest.mark.slow
def test_a_mixture_of_softmaxes_checkpoint_generates_with_its_own_head(run, tmp_path, generate_here):
    plain = sorted((run / "checkpoints").iterdir())[-1]
    config = load_causal_lm(plain).config
    torch.manual_seed(0)
    mos = build_causal_lm(config, HeadSpec(kind="mos", components=2))
    mos.save_pretrained(tmp_path / "mos")
    shutil.copy(plain / "tokenizer.json", tmp_path / "mos" / "tokenizer.json")
    code, out, err = generate_here("--checkpoint", tmp_path / "mos", "--prompt", PROMPT, "--max-new-tokens", 8,
                                   "--temperature", 0)
    assert code == 0, err
    assert samples(out) == [argmax_continuation(tmp_path / "mos", PROMPT, 8)]


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--checkpoint", "runs/no-such-run"], "no such directory"),
    (["--top-p", "1.5"], "--top_p must be in (0, 1]"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--max-new-tokens", "100000"], "exceed the model's context"),
    (["--prompt", ""], "has no tokens"),
    (["--temprature", "1"], "temprature"),
])
def test_bad_input_is_one_line(run, args, words, generate_here):
    base = {"--checkpoint": str(run), "--prompt": PROMPT}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    code, out, err = generate_here(*[x for kv in base.items() for x in kv])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err


@pytest.mark.slow
def test_a_truncated_model_file_is_one_line(run, tmp_path, generate_here):
    checkpoint = tmp_path / "truncated"
    shutil.copytree(run / "checkpoints" / "step00000006", checkpoint)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, out, err = generate_here("--checkpoint", checkpoint, "--prompt", PROMPT)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.safetensors" in lines[0], err
    assert "truncated or corrupt" in lines[0]


@pytest.mark.parametrize("kind", ["plain", "mos"])
def test_a_truncated_local_checkpoint_says_how_to_fix_it_once(tmp_path, kind):
    """A run's own checkpoint cannot be downloaded again: the error names the file, says what is wrong and gives
    one fix, the local one (not the hub's "download again" appended after it)."""
    from transformers import GPTNeoXConfig

    from lmdynamics.checkpoints.streaming import CorruptCheckpointError

    config = GPTNeoXConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=32)
    build_causal_lm(config, HeadSpec(kind=kind, components=2)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError) as err:
        load_causal_lm(tmp_path)
    line = str(err.value)
    assert str(weights) in line and "truncated or corrupt" in line and "restore" in line, line
    assert "download" not in line and line.count(";") == 1, line
