"""The learned preference models: exact symmetry, training, reports, checkpoints."""

import json

import numpy as np
import pytest
import torch

from course_lib import preference as pf

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny(kind="pairwise", seed=0):
    torch.manual_seed(seed)
    cfg = pf.PMConfig(
        kind=kind, vocab_size=20, pad_id=0, d_model=16, layers=1, heads=2, max_len=24, dropout=0.0
    )
    return pf.PreferenceModel(cfg).eval()


def random_rows(rng, n, lo=1, hi=12):
    return [rng.integers(1, 20, size=rng.integers(lo, hi)).tolist() for _ in range(n)]


def test_sym_sigmoid_sums_to_one_exactly():
    d = torch.cat([torch.randn(10_000) * 10, torch.tensor([0.0, 1e-8, 40.0, -40.0])])
    assert torch.equal(pf.sym_sigmoid(d) + pf.sym_sigmoid(-d), torch.ones_like(d))
    assert pf.sym_sigmoid(torch.tensor(0.0)) == 0.5


@pytest.mark.parametrize("kind", ["pairwise", "bt"])
def test_model_is_exactly_antisymmetric(kind):
    rng = np.random.default_rng(0)
    model = tiny(kind)
    x, y, y2 = random_rows(rng, 64, 5, 30), random_rows(rng, 64), random_rows(rng, 64)
    with torch.no_grad():
        p, q, same = model(x, y, y2), model(x, y2, y), model(x, y, y)
    assert torch.equal(p + q, torch.ones_like(p))
    assert torch.equal(same, torch.full_like(same, 0.5))
    assert p.min() > 0 and p.max() < 1


def test_pairwise_model_can_express_a_cycle_bt_cannot():
    """Train both kinds on a cyclic preference over three summaries: only the pairwise one
    recovers all three majorities (a Bradley-Terry model orders them on a line)."""
    a, b, c, x = [5, 6], [7, 8], [9, 10], [1, 2, 3]
    cyc = [(a, b), (b, c), (c, a)]
    train = [pf.Example(x, u, v, 1.0, 1.0) for u, v in cyc for _ in range(8)]
    found = {}
    for kind in ("pairwise", "bt"):
        model = tiny(kind, seed=1)
        pf.train_preference_model(
            model, train, train[:3], epochs=60, batch_size=24, lr=1e-2, patience=60, progress=False
        )
        with torch.no_grad():
            p = model([x] * 3, [u for u, _ in cyc], [v for _, v in cyc])
        found[kind] = p
    assert (found["pairwise"] > 0.5).all(), found["pairwise"]
    assert not (found["bt"] > 0.5).all(), found["bt"]


def test_training_lowers_validation_loss_and_keeps_best(tmp_path):
    rng = np.random.default_rng(1)
    # the preferred summary is the one holding token 19: a rule the model can learn
    examples = []
    for _ in range(160):
        good, bad = random_rows(rng, 1, 2, 6)[0] + [19], random_rows(rng, 1, 2, 6)[0]
        first = rng.random() < 0.5
        y, y2 = (good, bad) if first else (bad, good)
        examples.append(
            pf.Example(random_rows(rng, 1, 4, 10)[0], y, y2, float(first), 0.9 if first else 0.1)
        )
    model = tiny()
    before = pf.mean_loss(model, examples[120:])
    report = pf.train_preference_model(
        model,
        examples[:120],
        examples[120:],
        epochs=8,
        batch_size=16,
        lr=3e-3,
        out_dir=tmp_path / "pm",
        progress=False,
    )
    after = pf.mean_loss(model, examples[120:])
    assert after < before - 0.1
    assert after == pytest.approx(min(report.valid_loss), abs=1e-6)  # best weights restored
    p = pf.predict(model, examples[120:])
    assert pf.agreement(p, [e.p_oracle for e in examples[120:]]) > 0.8
    loaded = pf.load_preference_model(tmp_path / "pm")
    np.testing.assert_array_equal(pf.predict(loaded, examples[120:]), p)


def test_reports():
    assert pf.agreement([0.9, 0.2, 0.6, 0.4], [0.8, 0.3, 0.4, 0.5]) == pytest.approx(2 / 3)
    assert pf.bayes_label_agreement([0.9, 0.2, 0.5]) == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    cal = pf.calibration([0.05, 0.15, 0.95, 0.95], [0, 1, 1, 0], n_bins=10)
    assert cal.counts.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert cal.ece == pytest.approx((0.05 + 0.85 + 2 * 0.45) / 4)
    perfect = pf.calibration(np.full(1000, 0.3), np.r_[np.ones(300), np.zeros(700)])
    assert perfect.ece == pytest.approx(0.0, abs=1e-12)
    assert pf.confidently_wrong([0.95, 0.05, 0.6, 0.95], [0.2, 0.9, 0.1, 0.9]) == 0.5


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="kind='ranker'"):
        pf.PMConfig(kind="ranker", vocab_size=5).validate()
    with pytest.raises(ValueError, match="d_model=30 must be a multiple of heads=4"):
        pf.PMConfig(vocab_size=5, d_model=30, heads=4).validate()
    with pytest.raises(ValueError, match="mode='xx'"):
        pf.examples_from_pairs([], [], None, mode="xx")
    with pytest.raises(ValueError, match="shapes"):
        pf.calibration([0.1, 0.2], [1])
    with pytest.raises(FileNotFoundError, match="no preference model"):
        pf.load_preference_model("/nonexistent/pm")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bt", "nt"])
def test_committed_model_agrees_with_the_oracle(mode):
    """The committed models, on the 1000 held-out test pairs. The bar comes from the labels' own
    noise: a model that always picks the oracle's side agrees with the sampled labels only
    E[max(P*, 1 - P*)] of the time (0.83 in bt mode, 0.87 in nt); ours must come within 0.125
    of that (measured: 0.089 below in bt, 0.118 in nt), and agree with the oracle's side on
    at least 70% of pairs (chance: 50%)."""
    from course_lib.tasks import load_pairs, load_split, load_tokenizer

    model = pf.load_preference_model(pf.default_model_dir(mode))
    test = pf.examples_from_pairs(load_pairs("test"), load_split("test"), load_tokenizer(), mode)
    p = pf.predict(model, test)
    p_star = np.array([e.p_oracle for e in test])
    labels = np.array([e.label for e in test])
    bar = pf.bayes_label_agreement(p_star)
    assert np.mean((p > 0.5) == (labels > 0.5)) >= bar - 0.125
    assert pf.agreement(p, p_star) >= 0.70
    assert pf.calibration(p, p_star).ece < 0.08


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    """A random tiny Llama and a word-level tokenizer saved as a local model folder."""
    from course_lib import llm
    from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

    folder = tmp_path_factory.mktemp("backbone")
    save_tokenizer(
        build_tokenizer(["my wife got a job in miami should i move TL ; DR : good bad"]), folder
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    llm.tiny_llama(
        vocab_size=len(tok),
        hidden=64,
        layers=1,
        heads=4,
        seed=0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    ).save_pretrained(folder)
    return str(folder)


def test_backbone_model_is_antisymmetric_trains_and_reloads(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    model, tok = pf.backbone_preference_model(tiny_backbone, lora_r=4, max_len=32)
    assert model.cfg.backbone == tiny_backbone and model.cfg.d_model == 64
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in n and not n.startswith("head") for n in frozen)
    x = pf.encode_texts(tok, ["my wife got a job in miami should i move"])[0]
    good, bad = pf.encode_texts(tok, ["my wife got a job in miami good", "bad bad should"])
    train = [pf.Example(x, good, bad, 1.0, 1.0), pf.Example(x, bad, good, 0.0, 0.0)] * 4
    with torch.no_grad():
        p, q = model([x, x], [good, bad], [bad, good]), model([x, x], [bad, good], [good, bad])
    assert torch.equal(p + q, torch.ones_like(p))
    before = pf.mean_loss(model, train)
    pf.train_preference_model(
        model,
        train,
        train,
        epochs=5,
        batch_size=8,
        lr=5e-3,
        progress=False,
        out_dir=tmp_path / "pm",
    )
    assert pf.mean_loss(model, train) < before
    saved = json.loads((tmp_path / "pm" / "config.json").read_text())
    assert saved["backbone"] == tiny_backbone
    loaded = pf.load_preference_model(tmp_path / "pm")
    np.testing.assert_allclose(pf.predict(loaded, train), pf.predict(model, train), atol=1e-6)
    with pytest.raises(ValueError, match="needs its language model"):
        pf.PreferenceModel(pf.PMConfig(vocab_size=5, backbone="embedded"))
