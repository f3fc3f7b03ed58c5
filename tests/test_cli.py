"""The ``simplellama`` command line: commands on the embedded model and tiny checkpoints; each bad input
ends in one line ``simplellama: error: ...`` with exit status 1 (runtime) or 2 (usage)."""

import io
import re
import subprocess
import sys

import pytest
import torch
from ckpt_factory import tiny_args, write_meta
from embedded_model import one_thread_llama

from simplellama import cli
from simplellama.checkpoint import default_model_path


@pytest.fixture(scope="module")
def llama():
    yield from one_thread_llama(max_seq_len=256)


@pytest.fixture()
def loaded(llama, monkeypatch):
    """main() uses the module's model instead of loading it again; records the options it was given."""
    seen = []

    def build(opts):
        seen.append(opts)
        llama.generator.manual_seed(opts.seed)
        return llama

    monkeypatch.setattr(cli, "_build", build)
    return seen


def run(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("simplellama: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_generate_prints_the_greedy_completion(llama, loaded, capsys):
    code, out, _ = run(
        ["generate", "--prompt", "The capital of France is", "--temperature", "0", "--max-new-tokens", "6"], capsys
    )
    expected = llama.text_completion(["The capital of France is"], temperature=0, max_gen_len=6)[0]["generation"]
    assert code == 0 and out == expected + "\n"
    assert loaded[0].max_new_tokens == 6 and loaded[0].temperature == 0.0 and loaded[0].stream is True


def test_generate_no_stream_and_sampling_options(llama, loaded, capsys):
    args = ["generate", "--prompt", "Once", "--max_new_tokens", "5", "--top-k", "5", "--top-p", "0.8", "--seed", "3"]
    code, out, _ = run(args + ["--no-stream"], capsys)
    assert code == 0 and loaded[0].stream is False and loaded[0].top_k == 5 and loaded[0].top_p == 0.8
    code, again, _ = run(args, capsys)  # same seed, streamed: same text
    assert again == out


def test_chat_one_shot_and_stdin_turns_keep_history(llama, loaded, capsys, monkeypatch):
    code, out, _ = run(
        ["chat", "What is the capital of France?", "--temperature", "0", "--max-new-tokens", "12"], capsys
    )
    assert code == 0 and "Paris" in out
    code, out, _ = run(
        ["chat", "--temperature", "0", "--max-new-tokens", "8", "--system", "Be brief."],
        capsys,
        stdin="Hi!\nWhat did I just say?\n",
        monkeypatch=monkeypatch,
    )
    first = llama.chat_completion(
        [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]], temperature=0, max_gen_len=8
    )[0]["generation"]
    dialog = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        first,
        {"role": "user", "content": "What did I just say?"},
    ]
    second = llama.chat_completion([dialog], temperature=0, max_gen_len=8)[0]["generation"]["content"]
    assert code == 0 and out == f"{first['content']}\n{second}\n"


def test_info_describes_the_embedded_model(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0
    # SmolLM2-135M (its GGUF metadata): 30 layers, dim 576, 9 heads, 3 kv heads, FFN 1536, vocab 49152, tied
    D, L, H, K, F, V = 576, 30, 9, 3, 1536, 49152
    Dh = D // H
    n = V * D + L * (2 * D * H * Dh + 2 * D * K * Dh + 3 * D * F + 2 * D) + D
    assert "Llama: 30 layers, dim 576, 9 heads (3 kv, head dim 64), FFN 1536, vocab 49152" in out
    assert f"parameters:      {n:,}" in out
    assert "tied embeddings: yes" in out and "chat template:   yes" in out
    assert "dtypes:          float32" in out and "ByteLevelBPETokenizer" in out


def test_convert_tiny_meta_to_hf_loads_in_transformers(tmp_path, capsys):
    from transformers import LlamaForCausalLM

    args = tiny_args()
    write_meta(tmp_path / "meta", args)
    code, out, _ = run(["convert", str(tmp_path / "meta"), str(tmp_path / "hf"), "--to", "hf"], capsys)
    assert code == 0 and str(tmp_path / "hf") in out
    model = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    code, out, _ = run(["info", str(tmp_path / "hf")], capsys)
    assert code == 0 and f"parameters:      {model.num_parameters():,}" in out
    assert "format:          hf" in out


@pytest.mark.slow  # a fresh process loads the model
def test_make_demo_command_streams_a_sensible_answer():
    """What ``make demo`` runs, as a real process (default sampling, seed 1)."""
    proc = subprocess.run(
        [sys.executable, "-m", "simplellama", "chat", "What is the capital of France?"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


@pytest.mark.parametrize(
    "argv,message",
    [
        (["generate", "--prompt", "hi", "--model", "/no/such/model.gguf"], "/no/such/model.gguf: no such file"),
    ],
)
def test_runtime_errors_are_one_line_with_status_1(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 1
    assert re.search(message, one_error_line(err))


def test_truncated_gguf_is_a_one_line_error(tmp_path, capsys):
    src = default_model_path()
    cut = tmp_path / "cut.gguf"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(200_000))
    code, _, err = run(["info", str(cut)], capsys)
    assert code == 1 and f"{cut}: truncated or corrupt GGUF" in one_error_line(err)


def test_directory_of_no_known_format_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run(["info", str(tmp_path)], capsys)
    assert code == 1 and f"{tmp_path}: not a checkpoint" in one_error_line(err)


def test_checkpoint_without_tokenizer_is_a_one_line_error(tmp_path, capsys):
    write_meta(tmp_path, tiny_args())
    code, _, err = run(["generate", "--prompt", "hi", "--model", str(tmp_path)], capsys)
    assert code == 1 and "no tokenizer found with the checkpoint" in one_error_line(err)


def test_max_new_tokens_past_the_context_is_a_one_line_error(loaded, capsys):
    long = "word " * 200
    code, _, err = run(["generate", "--prompt", long, "--max-new-tokens", "100"], capsys)
    assert code == 1 and re.search(r"\+ max_gen_len \(100\) = \d+ exceeds max_seq_len=256", one_error_line(err))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["generate", "--prompt", "hi", "--max-new-tokns", "3"], "did you mean --max-new-tokens?"),
        (["generate"], "the following arguments are required: --prompt"),
        (["generate", "--prompt", "hi", "--temperature", "hot"], "temperature"),
        (["convert", "a", "b", "--to", "onnx"], "invalid choice: 'onnx'"),
        (["convert", "a", "b.gguf", "--to", "gguf", "--outtype", "q4_k"], "invalid choice: 'q4_k'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        # values that parse but cannot work are usage errors too (issue 17: argparse errors)
        (["generate", "--prompt", "   "], "--prompt is empty"),
        (["chat", ""], "chat: the message is empty"),
        (
            ["generate", "--prompt", "hi", "--max-new-tokens", "4096"],
            "--max-new-tokens (4096) must be smaller than --max-seq-len (2048)",
        ),
        (["bench", "--rows", "int3"], "--rows: expected a comma list of fp32, bf16, int8, int4, auto"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_tokenizer_that_does_not_fit_the_model_is_a_one_line_error(capsys):
    import importlib.util
    from pathlib import Path

    root = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0])
    llama3 = root / "llama3" / "tokenizer.model"
    code, _, err = run(["generate", "--prompt", "hi", "--tokenizer", str(llama3)], capsys)
    assert code == 1
    assert "tokenizer has 128256 tokens but the model's vocab_size is 49152" in one_error_line(err)


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:  # argparse's version action exits, like --help
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"simplellama {version('simplellama')}"


def test_misspelt_required_switch_is_named_before_the_missing_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--promt", "hi"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --promt; --promt: did you mean --prompt?" in err


RSS_PROBE = """
import resource, sys
import simplellama.checkpoint, simplellama.cli  # the code info runs: imported before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert simplellama.cli.main(["info"]) == 0
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_info_reads_headers_only():
    """``info`` on the embedded GGUF peaks at a fraction of the fp32 weight bytes: nothing dequantized.

    Measured in a fresh process as the rise of its peak RSS while ``info`` runs (imports excluded).
    """
    import gguf

    fp32_bytes = 4 * sum(int(t.n_elements) for t in gguf.GGUFReader(default_model_path()).tensors)
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    before, after = map(int, proc.stdout.strip().splitlines()[-1].split())
    rise = (after - before) * 1024
    assert fp32_bytes > 500e6  # 134.5 M parameters
    assert rise < fp32_bytes / 4, f"info raised peak RSS by {rise / 2**20:.0f} MiB"


def test_version_and_help_import_no_torch():
    """``simplellama --version`` / ``--help`` stay instant: neither imports torch or the model code."""
    probe = (
        "import sys\nfrom simplellama import cli\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'simplellama.model') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
