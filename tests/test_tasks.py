"""The synthetic TL;DR task: corpus, oracle, files, real-data loader, tokenizer.

Nothing here touches the network: the real-data loader is tested on tests/fixtures.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from course_lib import paths
from course_lib.tasks import oracle as O
from course_lib.tasks import summarisation as S
from course_lib.tasks import tldr
from course_lib.tasks.summarisation import builder
from course_lib.tasks.text import normalise

DATA = paths.data_dir()
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def records():
    return S.generate_split("valid", 120)


# -- corpus ------------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_prefix_stable():
    a = S.generate_split("test", 30)
    b = S.generate_split("test", 30)
    assert a == b
    # record i does not depend on how many records are drawn
    assert S.generate_split("test", 10) == a[:10]
    assert S.generate_record(S.DEFAULT_SEED, "test", 17) == a[17]
    # and it does depend on the seed and the split
    assert S.generate_record(1, "test", 17).post != a[17].post
    assert S.generate_record(S.DEFAULT_SEED, "valid", 17).post != a[17].post


def test_every_fact_is_stated_in_the_post_and_summaries_have_their_quality(records):
    """Each quality has the defect it is named after, as the oracle reads it."""
    bt = O.Oracle("bt")
    for r in records:
        assert [f.slot for f in r.facts] == list(S.SLOTS)
        assert [s.quality for s in r.summaries] == list(S.QUALITIES)
        post = r.post.lower()
        for f in r.facts:
            assert any(a.lower() in post for a in f.anchors), (r.id, f)
        ref = bt.aspects(r, r.reference)
        assert ref.coverage == 1 and ref.hallucinated == () and ref.form == 1, (r.id, ref)
        assert abs(ref.n_words - r.target_len) <= 6
        assert bt.aspects(r, r.summary("good")).coverage == 1
        assert bt.aspects(r, r.summary("missing")).coverage < 1
        assert len(bt.aspects(r, r.summary("unfaithful")).hallucinated) >= 1
        assert bt.aspects(r, r.summary("too_long")).n_words > 2 * r.target_len
        assert bt.aspects(r, r.summary("too_short")).n_words <= 4
        assert bt.aspects(r, r.summary("malformed")).form < 1
        assert r.post.startswith(r.summary("lead"))
    # distractors: other people, places and amounts are in the posts, not only the key facts
    extra = [O.entities(r.post) - O.entities(" ".join(f.value for f in r.facts)) for r in records]
    assert np.mean([len(e) >= 1 for e in extra]) > 0.9


def test_reference_beats_every_defective_quality_on_average(records):
    bt = O.Oracle("bt")
    for q in ("missing", "unfaithful", "too_long", "too_short", "malformed", "lead"):
        win = np.mean([bt.prob(r, r.reference, r.summary(q)) for r in records])
        assert win > 0.6, (q, win)


# -- oracle ------------------------------------------------------------------------------------


def _random_texts(records, rng: random.Random, n: int) -> list[str]:
    pool = [s.text for r in records[:20] for s in r.summaries]
    vocab = sorted({w for t in pool for w in t.split()}) + ["$", "42", "ünï", "💥", "<tldr>"]
    out = ["", " ", "\n", "x" * 5000]
    while len(out) < n:
        kind = rng.random()
        if kind < 0.4:
            out.append(rng.choice(pool))
        elif kind < 0.5:  # same text up to whitespace
            out.append("  " + rng.choice(pool).replace(" ", "\t", 1) + "\n")
        else:
            out.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40))))
    return out


@pytest.mark.parametrize("mode", O.MODES)
def test_oracle_is_exactly_antisymmetric(records, mode):
    """P(y > y') + P(y' > y) == 1 and P(y > y) == 1/2, with ==, on random pairs."""
    oracle = O.Oracle(mode)
    rng = random.Random(0)
    texts = _random_texts(records, rng, 120)
    for _ in range(1500):
        r = rng.choice(records)
        y, y2 = rng.choice(texts), rng.choice(texts)
        p, q = oracle.prob(r, y, y2), oracle.prob(r, y2, y)
        assert 0.0 <= p <= 1.0
        assert p + q == 1.0, (y, y2, p, q)
        assert 1.0 - p == q
        assert oracle.prob(r, y, y) == 0.5
    m = oracle.prob_matrix(records[0], texts[:30])
    assert np.array_equal(m + m.T, np.ones_like(m))
    assert np.all(np.diag(m) == 0.5)


def test_bt_mode_is_sigmoid_of_score_difference(records):
    bt = O.Oracle("bt")
    for r in records[:30]:
        for a in r.summaries:
            for b in r.summaries:
                if a.text != b.text:
                    d = bt.score(r, a.text) - bt.score(r, b.text)
                    assert bt.prob(r, a.text, b.text) == pytest.approx(
                        1 / (1 + math.exp(-d)), 1e-11
                    )


def test_nt_mode_is_the_rater_mixture(records):
    """P = sum_k w_k P_k, P_k the step (deterministic) or the sigmoid of the type's own score."""
    nt = O.Oracle("nt")
    r = records[3]
    for a in r.summaries:
        for b in r.summaries:
            if a.text == b.text:
                continue
            va, vb = nt.aspects(r, a.text).vector(), nt.aspects(r, b.text).vector()
            expect = 0.0
            for t in O.DEFAULT_RATERS:
                d = float(np.dot(t.weights, va - vb))
                pk = (np.sign(d) + 1) / 2 if t.deterministic else 1 / (1 + math.exp(-d))
                expect += t.share * pk
            assert nt.prob(r, a.text, b.text) == pytest.approx(expect, abs=1e-9)


def test_count_cycles_on_known_matrices():
    rps = np.array([[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]])
    assert O.count_cycles(rps) == 1
    assert O.count_cycles(np.triu(np.ones((5, 5)), 1) + 0.5 * np.eye(5)) == 0
    with pytest.raises(ValueError, match="square"):
        O.count_cycles(np.ones((2, 3)))


def test_cycles_occur_in_the_nt_mode_and_never_in_bt(records):
    """Count intransitive triples among each record's 8 generated summaries."""
    counts = {}
    for mode in O.MODES:
        oracle = O.Oracle(mode)
        counts[mode] = sum(
            O.count_cycles(oracle.prob_matrix(r, [s.text for s in r.summaries])) for r in records
        )
    print(f"cycles over {len(records)} records x C(8,3) triples: {counts}")
    assert counts["bt"] == 0
    assert counts["nt"] >= 20


def test_oracle_reads_free_text():
    r = S.generate_record(0, "valid", 0)
    bt = O.Oracle("bt")
    detail = r.facts[2].value
    a = bt.aspects(r, r.reference)
    assert a.covered == S.SLOTS and a.faithfulness == 1.0
    # an entity that is not in the post is counted once, whatever its case
    other = next(v for v in ("Miami", "Boston") if v.lower() not in r.post.lower())
    b = bt.aspects(r, r.reference.replace(".", f" in {other.upper()}.", 1))
    assert b.hallucinated == (other.lower(),) and b.faithfulness == 0.5
    # dropping the detail loses exactly one fact
    c = bt.aspects(r, r.reference.replace(detail, "it"))
    assert c.coverage == 0.75 and "detail" not in c.covered
    # empty, whitespace, very long and non-English input are all judged, quickly
    for text in ("", " \n\t", "word " * 20000, "💥 ünïcode ✓ <s>"):
        e = bt.aspects(r, text)
        assert 0 <= e.coverage <= 1 and 0 <= e.form <= 1
        assert bt.prob(r, r.reference, text) > 0.99
    assert bt.aspects(r, "").n_words == 0 and bt.aspects(r, "").form == 0
    with pytest.raises(ValueError, match="str"):
        bt.prob(r, None, "x")
    with pytest.raises(ValueError, match="mode"):
        O.Oracle("elo")


def test_length_score_peaks_at_the_target():
    assert O.length_score(15, 15) == 1.0
    assert O.length_score(10, 15) < 1 and O.length_score(22, 15) < 1
    assert O.length_score(0, 15) < 1e-6


# -- files -------------------------------------------------------------------------------------


def test_committed_files_match_their_checksums():
    assert (DATA / "CHECKSUMS.sha256").is_file(), "run `make data`"
    listed = [line.split()[1] for line in (DATA / "CHECKSUMS.sha256").read_text().splitlines()]
    assert "records_pretrain.jsonl" in listed and "tokenizer/tokenizer.json" in listed
    assert S.verify(DATA) == []


def test_paths_anchor_the_repository_and_hash_like_sha256sum():
    root = paths.repo_root()
    assert (root / "course_lib" / "paths.py").is_file()
    assert paths.data_dir() == root / "data" and paths.results_dir() == root / "results"
    listed = dict(
        reversed(line.split()) for line in (DATA / "CHECKSUMS.sha256").read_text().splitlines()
    )
    assert paths.sha256_file(DATA / "manifest.json") == listed["manifest.json"]
    assert paths.sha256_file(DATA / "manifest.json", chunk=7) == listed["manifest.json"]


def test_a_small_rebuild_is_a_byte_prefix_of_the_committed_files(tmp_path):
    """Records and pairs are drawn per index, so a small build is a prefix of the full one."""
    sizes = {"pretrain": 12, "train": 5, "valid": 4, "test": 6}
    S.build(tmp_path, sizes=sizes, tokenizer=False)
    for fname in [f for f, _ in S.SPLITS.values()] + [f for f, _, _ in S.PAIR_SPLITS.values()]:
        small = (tmp_path / fname).read_bytes()
        assert small, fname
        assert (DATA / fname).read_bytes().startswith(small), fname


@pytest.mark.slow
def test_a_full_rebuild_is_byte_identical(tmp_path):
    sums = S.build(tmp_path)
    committed = (DATA / "CHECKSUMS.sha256").read_text()
    assert (tmp_path / "CHECKSUMS.sha256").read_text() == committed
    assert set(sums) == {line.split()[1] for line in committed.splitlines()}


def test_write_read_round_trip(tmp_path, records):
    S.write_jsonl(tmp_path / "r.jsonl", (S.record_to_json(r) for r in records[:10]))
    assert S.read_records(tmp_path / "r.jsonl") == records[:10]
    pairs = S.make_pairs(records[:10], 3, "x")
    S.write_jsonl(tmp_path / "p.jsonl", (S.pair_to_json(p) for p in pairs))
    back = S.read_pairs(tmp_path / "p.jsonl", records[:10])
    assert [(p.y, p.y_prime, p.label_bt) for p in back] == [
        (p.y, p.y_prime, p.label_bt) for p in pairs
    ]
    assert all(abs(a.p_nt - b.p_nt) <= 5e-7 for a, b in zip(back, pairs, strict=True))


def test_committed_pairs_agree_with_the_oracle():
    pairs = S.load_pairs("valid")
    recs = {r.id: r for r in S.load_split("valid")}
    bt, nt = O.Oracle("bt"), O.Oracle("nt")
    assert len(pairs) == 400
    for p in pairs:
        r = recs[p.record_id]
        assert p.y == r.summaries[p.i].text and p.quality_y == r.summaries[p.i].quality
        assert abs(p.p_bt - bt.prob(r, p.y, p.y_prime)) <= 5e-7
        assert abs(p.p_nt - nt.prob(r, p.y, p.y_prime)) <= 5e-7
    # labels are draws from p: the share of y-wins is close to the mean of p
    assert abs(np.mean([p.label_bt for p in pairs]) - np.mean([p.p_bt for p in pairs])) < 0.06


def _good_record_line() -> dict:
    return S.record_to_json(S.generate_record(0, "valid", 0))


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d.pop("post"), "post", "missing"),
        (lambda d: d.update(target_len="15"), "target_len", "expected int"),
        (lambda d: d.update(target_len=True), "target_len", "expected int"),
        (lambda d: d["summaries"][1].update(quality="great"), "summaries[1].quality", "not one"),
        (lambda d: d["facts"][2].update(anchors=[]), "facts[2].anchors", "non-empty"),
        (lambda d: d["summaries"][0].pop("text"), "summaries[0].text", "missing"),
    ],
)
def test_record_schema_errors_name_file_line_and_field(tmp_path, mutate, field, message):
    good = _good_record_line()
    bad = json.loads(json.dumps(good))
    mutate(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in (good, good, bad)) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: field ") as err:
        S.read_records(path)
    assert repr(field) in str(err.value) and message in str(err.value)


def test_bad_json_and_pair_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_good_record_line()) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: field '<line>': not valid JSON"):
        S.read_records(path)
    recs = S.generate_split("valid", 2)
    line = S.pair_to_json(S.make_pairs(recs, 1, "x")[0])
    cases = [
        ({"i": 8}, "'i'", "outside"),
        ({"j": line["i"]}, "'j'", "differ"),
        ({"p_bt": 1.5}, "'p_bt'", "probability"),
        ({"label_nt": 2}, "'label_nt'", "0 or 1"),
        ({"record_id": "nope"}, "'record_id'", "no record"),
    ]
    for change, field, message in cases:
        path = tmp_path / "pairs.jsonl"
        path.write_text(json.dumps(line) + "\n" + json.dumps({**line, **change}) + "\n")
        with pytest.raises(ValueError, match=r"pairs\.jsonl:2: field ") as err:
            S.read_pairs(path, recs)
        assert field in str(err.value) and message in str(err.value)
    with pytest.raises(ValueError, match="unknown split"):
        S.generate_split("dev", 3)


# -- real TL;DR data (offline, fixtures) -------------------------------------------------------


def test_fixture_comparisons_load_and_skip_non_reddit_rows():
    rows = tldr.read_comparisons_jsonl(FIXTURES / "tldr_comparisons.jsonl")
    assert [c.id for c in rows] == ["t3_fx0001", "t3_fx0002", "t3_fx0003", "t3_fx0005"]
    assert [c.label for c in rows] == [1, 0, 1, 1]  # choice 0 -> y preferred
    assert rows[1].chosen.startswith(" Offer pays 20% more")
    assert rows[2].confidence is None and rows[0].confidence == 8
    assert rows[0].prompt().startswith("SUBREDDIT: r/relationships\n\nTITLE: Roommate")
    assert rows[0].prompt().endswith("\n\nTL;DR:")
    with pytest.raises(ValueError, match=r"tldr_comparisons\.jsonl:4: field 'info\.post'"):
        tldr.read_comparisons_jsonl(FIXTURES / "tldr_comparisons.jsonl", reddit_only=False)


def test_fixture_prompts_load():
    rows = tldr.read_prompts_jsonl(FIXTURES / "tldr_prompts.jsonl")
    assert len(rows) == 3 and all(r.prompt.endswith("TL;DR:") for r in rows)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["summaries"][1].update(text=3), "summaries[1].text"),
        (lambda d: d.update(choice=2), "choice"),
        (lambda d: d.update(choice=True), "choice"),
        (lambda d: d["summaries"].pop(), "summaries"),
        (lambda d: d["info"].pop("id"), "info.id"),
        (lambda d: d.update(extra={"confidence": 12}), "extra.confidence"),
    ],
)
def test_comparison_schema_errors_name_file_line_and_field(tmp_path, mutate, field):
    lines = (FIXTURES / "tldr_comparisons.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    mutate(bad)
    lines[1] = json.dumps(bad)
    path = tmp_path / "cmp.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"cmp\.jsonl:2: field ") as err:
        tldr.read_comparisons_jsonl(path)
    assert repr(field) in str(err.value)


def test_prompt_schema_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "no post marker", "completion": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"p\.jsonl:1: field 'prompt'"):
        tldr.read_prompts_jsonl(path)


def test_hub_loader_validates_rows_offline(monkeypatch):
    """load_comparisons through `datasets`, with load_dataset replaced by the fixture rows."""
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(x) for x in (FIXTURES / "tldr_comparisons.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = tldr.load_comparisons("validation", limit=3)
    assert calls == [(tldr.HUB_COMPARISONS, "comparisons", "validation", tldr.PARQUET_REVISION)]
    assert [c.id for c in got] == ["t3_fx0001", "t3_fx0002", "t3_fx0003"]
    rows[1]["choice"] = 5
    with pytest.raises(ValueError, match=r"summarize_from_feedback\[validation\] row 1: "):
        tldr.load_comparisons("validation")


# -- tokenizer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from course_lib.tasks.tokenizer import load_tokenizer

    return load_tokenizer(DATA / "tokenizer")


def test_tokenizer_round_trip(tokenizer):
    recs = S.load_split("test")[:60]
    texts = [t for r in recs for t in (r.post, *(s.text for s in r.summaries))]
    texts += ["  My  landlord\tkept my\ndeposit, $800.  "]  # whitespace runs collapse
    for t in texts:
        ids = tokenizer(t)["input_ids"]
        assert tokenizer.unk_token_id not in ids, t
        assert tokenizer.decode(ids) == normalise(t)
    # one id per word or punctuation mark, and one for the space before a symbol:
    # ▁My ▁landlord ▁kept ▁my ▁ $ 800 ▁deposit .
    assert len(tokenizer("My landlord kept my $800 deposit.")["input_ids"]) == 9


def test_tokenizer_specials_and_unknown_words(tokenizer):
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    assert [tokenizer.unk_token_id, tokenizer.sep_token_id] == [3, 4]
    ids = tokenizer("<s> My landlord <tldr> court? </s>")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2 and 4 in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "My landlord court?"
    assert tokenizer("Zyzzyva")["input_ids"] == [tokenizer.unk_token_id]


def test_tokenizer_vocabulary_counting_matches_direct_pre_tokenization():
    from course_lib.tasks.tokenizer import SPECIAL_TOKENS, _pipeline, build_tokenizer

    texts = [t for r in S.generate_split("test", 15) for t in builder._record_texts(r)]
    tok = build_tokenizer(texts)
    normalizer, pre, _ = _pipeline()
    direct = {p for t in texts for p, _ in pre.pre_tokenize_str(normalizer.normalize_str(t))}
    assert set(tok.get_vocab()) == direct | set(SPECIAL_TOKENS)
    assert len(tok.get_vocab()) == len(direct) + len(SPECIAL_TOKENS)


# -- tiny policy -----------------------------------------------------------------------------------


def test_training_examples_have_the_documented_layout(tokenizer):
    from course_lib.tasks import tiny_policy as T

    r = S.generate_record(0, "valid", 1)
    ids = T.example_ids(tokenizer, r.post, r.reference)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    sep = ids.index(tokenizer.sep_token_id)
    assert tokenizer.decode(ids[1:sep]) == normalise(r.post)
    assert tokenizer.decode(ids[sep + 1 : -1]) == normalise(r.reference)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread (and far faster on a shared, busy CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pretrain_runs_and_lowers_the_loss(tokenizer, one_thread):
    """A few steps of a very small model on a few records: the loss must go down."""
    from course_lib.tasks import tiny_policy as T

    spec = T.TinyPolicySpec(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    recs = S.generate_split("valid", 4)
    model, _, log = T.pretrain(30, spec, recs, tokenizer, progress=False, log_every=10)
    assert log["loss"][-1] < log["loss"][0] - 0.5, log["loss"]
    out = T.generate_summaries(model, tokenizer, [recs[0].post], max_new_tokens=5, seed=1)
    assert len(out) == 1 and isinstance(out[0], str)


def test_committed_tiny_policy_loads_with_auto_classes_and_generates(one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_lib.tasks import tiny_policy as T

    folder = T.default_policy_dir()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok)
    recs = S.load_split("test")[:2]
    out = T.generate_summaries(model, tok, [r.post for r in recs], max_new_tokens=12, seed=0)
    assert len(out) == 2
    assert tok.unk_token not in " ".join(out)
    again = T.generate_summaries(model, tok, [r.post for r in recs], max_new_tokens=12, seed=0)
    assert again == out  # seeded sampling is reproducible
    rate = T.win_rate_vs_reference(recs, out)
    assert 0.0 <= rate["win_rate"] <= 1.0


def test_completion_only_batches_mask_the_post(tokenizer):
    from course_lib.tasks import tiny_policy as T
    from course_lib.tasks.tiny_policy import training

    recs = S.generate_split("valid", 2)
    ex = T.encode_corpus(tokenizer, recs, 400)
    ids, mask, labels = training._batch(ex, [0, 9], completion_only=True)
    for k, i in enumerate([0, 9]):
        sep = ex[i].index(tokenizer.sep_token_id)
        assert (labels[k, : sep + 1] == -100).all()
        assert labels[k, sep + 1 : len(ex[i])].tolist() == ex[i][sep + 1 :]
        assert (labels[k, len(ex[i]) :] == -100).all()


def test_make_model_builds_the_committed_architecture(one_thread, tmp_path):
    """make_model (through models.tiny_llama) saves the committed tiny policy's config.json field
    for field, and the committed weights load into it with the committed model's logits."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from course_lib.tasks import tiny_policy as T

    folder = T.default_policy_dir()
    committed = json.loads((folder / "config.json").read_text())
    model = T.make_model(committed["vocab_size"])
    model.save_pretrained(tmp_path)
    fresh = json.loads((tmp_path / "config.json").read_text())
    fresh["transformers_version"] = committed["transformers_version"]  # the library's, not ours
    assert fresh == committed
    assert model.lm_head.weight is model.model.embed_tokens.weight
    missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    ids = torch.tensor([[1, 5, 6, 7, 4, 8, 9, 2]])
    saved = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, saved(ids).logits)


# -- no import circles -----------------------------------------------------------------------------


def _course_imports(path: Path, root: Path) -> set[str]:
    """The course_lib modules a file imports, at the top or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("course_lib")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
            for alias in node.names:  # `from package import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                is_module = (root / (sub.replace(".", "/") + ".py")).is_file() or (
                    root / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                found.add(sub if is_module else node.module)
    return found


def test_the_task_and_preference_packages_import_no_circle():
    """No module of course_lib.tasks, course_lib.preference, paths or atomic can reach itself by
    imports (a circle hidden by an import inside a function counts too)."""
    root = Path(paths.repo_root())
    graph = {}
    for path in (root / "course_lib").rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        graph[name.removesuffix(".__init__")] = _course_imports(path, root)
    ours = [
        m
        for m in graph
        if m.startswith(("course_lib.tasks", "course_lib.preference"))
        or m in ("course_lib.paths", "course_lib.atomic")
    ]
    for start in ours:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            assert m != start, f"{start} imports itself through {sorted(seen)}"
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
