"""Prompt → token batches: ids checked against transformers' CLIPTokenizer run directly on the
pieces ComfyUI tokenizes, weights and batch boundaries worked out by hand."""

from __future__ import annotations

import filecmp
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfyserve.text.tokenizer import TOKENIZER_DIR, EncoderTokenizer

SHARED_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "data" / "clip_tokenizer"
START, END = 49406, 49407


@pytest.fixture(scope="module")
def hf():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)


def ids(hf, text: str) -> list[int]:
    """BPE ids of `text` without start/end, straight from transformers."""
    out = hf(text)["input_ids"]
    assert out[0] == START and out[-1] == END
    return out[1:-1]


@pytest.fixture
def emb_dir(tmp_path):
    path = tmp_path / "embeddings"
    path.mkdir()
    return path


@pytest.fixture
def clip_l(emb_dir):
    return EncoderTokenizer("clip_l", 768, pad_with_end=True, embedding_directories=[emb_dir])


@pytest.fixture
def clip_g(emb_dir):
    return EncoderTokenizer("clip_g", 1280, pad_with_end=False, embedding_directories=[emb_dir])


def batch(content: list[int], pad: int) -> list[int]:
    row = [START, *content, END]
    return row + [pad] * (77 - len(row))


def token_ids(batches):
    return [[t for t, _ in b] for b in batches]


def weights(batches):
    return [[w for _, w in b] for b in batches]


def test_shipped_tokenizer_files_are_the_shared_ones():
    names = sorted(p.name for p in TOKENIZER_DIR.iterdir())
    assert names == ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    if SHARED_TOKENIZER.is_dir():
        match, mismatch, errors = filecmp.cmpfiles(SHARED_TOKENIZER, TOKENIZER_DIR, names, shallow=False)
        assert match == names, (mismatch, errors)


def test_pyproject_ships_the_tokenizer_files():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["comfyserve"]
    package = TOKENIZER_DIR.parents[1]
    shipped = {p.relative_to(package).as_posix() for pattern in patterns for p in package.glob(pattern)}
    assert {f"text/clip_tokenizer/{p.name}" for p in TOKENIZER_DIR.iterdir()} <= shipped


def test_plain_prompt_is_one_padded_batch(hf, clip_l, clip_g):
    text = "a photograph of an astronaut riding a horse"
    content = ids(hf, text)
    assert content == [320, 8853, 539, 550, 18376, 6765, 320, 4558]
    assert token_ids(clip_l.tokenize_with_weights(text)) == [batch(content, END)]
    assert token_ids(clip_g.tokenize_with_weights(text)) == [batch(content, 0)]  # OpenCLIP pads with 0
    assert weights(clip_l.tokenize_with_weights(text)) == [[1.0] * 77]


def test_empty_prompt(clip_l, clip_g):
    assert clip_l.tokenize_with_weights("") == [[(START, 1.0), (END, 1.0)] + [(END, 1.0)] * 75]
    assert clip_g.tokenize_with_weights("") == [[(START, 1.0), (END, 1.0)] + [(0, 1.0)] * 75]


def test_weighted_segments_are_tokenized_separately(hf, clip_l):
    out = clip_l.tokenize_with_weights("a (red:1.5) cat, ((blue)) sky")
    pieces = [("a ", 1.0), ("red", 1.5), (" cat, ", 1.0), ("blue", 1.1 * 1.1), (" sky", 1.0)]
    content = [(t, w) for text, w in pieces for t in ids(hf, text)]
    assert len(out) == 1
    expected = [(START, 1.0), *content, (END, 1.0)]
    expected += [(END, 1.0)] * (77 - len(expected))
    assert [t for t, _ in out[0]] == [t for t, _ in expected]
    assert [w for _, w in out[0]] == pytest.approx([w for _, w in expected])


def test_escaped_parentheses_are_tokenized_as_text(hf, clip_l):
    out = clip_l.tokenize_with_weights(r"a \(red\) cat")
    assert token_ids(out) == [batch(ids(hf, "a (red) cat"), END)]
    assert set(weights(out)[0]) == {1.0}


def test_long_group_is_split_at_75_tokens(hf, clip_l):
    text = "cat " * 100  # one unweighted segment: one group of 100 tokens
    cat = ids(hf, "cat")
    assert ids(hf, text) == cat * 100 and len(cat) == 1
    out = clip_l.tokenize_with_weights(text)
    assert token_ids(out) == [batch(cat * 75, END), batch(cat * 25, END)]


def test_exactly_75_tokens_fit_in_one_batch(hf, clip_l):
    cat = ids(hf, "cat")
    assert token_ids(clip_l.tokenize_with_weights("cat " * 75)) == [batch(cat * 75, END)]
    # one more token opens a second batch
    assert token_ids(clip_l.tokenize_with_weights("cat " * 76)) == [batch(cat * 75, END), batch(cat, END)]


def test_short_group_moves_whole_to_the_next_batch(hf, clip_l):
    cat, dog = ids(hf, "cat"), ids(hf, "dog")
    out = clip_l.tokenize_with_weights("cat " * 70 + "(dog dog dog dog dog dog:1.2)")
    assert token_ids(out) == [batch(cat * 70, END), batch(dog * 6, END)]
    assert weights(out)[1][1:7] == [1.2] * 6 and weights(out)[1][7] == 1.0


def test_group_of_eight_or_more_is_split_across_the_boundary(hf, clip_l):
    cat, dog = ids(hf, "cat"), ids(hf, "dog")
    out = clip_l.tokenize_with_weights("cat " * 70 + "(" + "dog " * 10 + ":1.2)")
    assert token_ids(out) == [batch(cat * 70 + dog * 5, END), batch(dog * 5, END)]
    assert weights(out)[0][71:76] == [1.2] * 5 and weights(out)[1][1:6] == [1.2] * 5


def test_word_ids_number_the_groups(hf, clip_l):
    out = clip_l.tokenize_with_weights("a (b:1.2) c", return_word_ids=True)
    row = out[0]
    assert row[0] == (START, 1.0, 0)
    n_a, n_b = len(ids(hf, "a ")), len(ids(hf, "b"))
    assert [w for _, _, w in row[1:1 + n_a]] == [1] * n_a
    assert [w for _, _, w in row[1 + n_a:1 + n_a + n_b]] == [2] * n_b
    assert row[-1][2] == 0  # padding


def test_min_length_and_min_padding(hf, clip_l):
    out = clip_l.tokenize_with_weights("cat", tokenizer_options={"clip_l_min_padding": 3})
    assert len(out[0]) == 77
    out = clip_l.tokenize_with_weights("cat " * 80, min_length=100)
    assert [len(b) for b in out] == [77, 100]


def _embedding(emb_dir: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    path = emb_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def test_embedding_vectors_become_tokens(hf, clip_l, emb_dir):
    vectors = torch.randn(2, 768)
    _embedding(emb_dir, "myemb.safetensors", {"emb_params": vectors})
    out = clip_l.tokenize_with_weights("a photo embedding:myemb of a cat")
    row = out[0]
    head = ids(hf, "a photo ")
    tail = ids(hf, "of a cat")
    assert [t for t, _ in row[:1 + len(head)]] == [START, *head]
    assert torch.equal(row[1 + len(head)][0], vectors[0]) and torch.equal(row[2 + len(head)][0], vectors[1])
    rest = row[3 + len(head):]
    assert [t for t, _ in rest[:len(tail) + 1]] == [*tail, END]
    assert len(row) == 77


def test_embedding_weight_and_name_forms(hf, clip_l, emb_dir):
    vector = torch.randn(768)
    _embedding(emb_dir, "sub/deep.safetensors", {"clip_l": vector[None], "clip_g": torch.randn(1, 1280)})
    # found in a sub-folder, by its file name; weighted with its group; trailing comma split off
    row = clip_l.tokenize_with_weights("(embedding:deep, cat:1.3)")[0]
    assert torch.equal(row[1][0], vector) and row[1][1] == pytest.approx(1.3)
    after = ids(hf, ", cat")  # the leftover after the name: "," + " " + "cat"
    assert [t for t, _ in row[2:2 + len(after)]] == after
    assert [w for _, w in row[2:2 + len(after)]] == pytest.approx([1.3] * len(after))


def test_sdxl_embedding_picks_the_encoders_key(clip_g, emb_dir):
    g = torch.randn(1, 1280)
    _embedding(emb_dir, "xl.safetensors", {"clip_l": torch.randn(1, 768), "clip_g": g})
    row = clip_g.tokenize_with_weights("embedding:xl")[0]
    assert torch.equal(row[1][0], g[0])


def test_a1111_pt_embedding(clip_l, emb_dir):
    vectors = torch.randn(3, 768)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "x", "step": 1},
               emb_dir / "old.pt")
    row = clip_l.tokenize_with_weights("embedding:old")[0]
    assert all(torch.equal(row[1 + i][0], vectors[i]) for i in range(3))
    assert row[4][0] == END


def test_missing_embedding_is_dropped_with_a_warning(hf, clip_l, caplog):
    with caplog.at_level(logging.WARNING):
        row = clip_l.tokenize_with_weights("a embedding:nope cat")[0]
    assert "embedding:nope does not exist" in caplog.text
    assert [t for t, _ in row] == batch(ids(hf, "a ") + ids(hf, "cat"), END)


def test_embedding_identifier_needs_whitespace_before_it(hf, clip_l, emb_dir):
    _embedding(emb_dir, "e.safetensors", {"v": torch.randn(1, 768)})
    row = clip_l.tokenize_with_weights("xembedding:e")[0]
    assert [t for t, _ in row] == batch(ids(hf, "xembedding:e"), END)


def test_embedding_names_cannot_leave_the_folder(hf, clip_l, emb_dir, tmp_path):
    save_file({"v": torch.randn(1, 768)}, str(tmp_path / "outside.safetensors"))
    row = clip_l.tokenize_with_weights("embedding:../outside")[0]
    assert all(isinstance(t, int) for t, _ in row)
