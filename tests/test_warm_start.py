"""Starting from a trained model: weights into a grown model, special tokens into a vocabulary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fairstream.errors import CheckpointError, InputDataError
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
)
from fairstream.tokenizer import Tokenizer
from fairstream.training.warm_start import extend_vocabulary, load_state_dict

ENC = {"conv_channels": 8, "num_layers": 1, "hidden_dim": 32, "output_dim": 32}


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.train(["a b"], tmp_path_factory.mktemp("tok"), model_type="char")


def _config(vocab_size: int, predictor: str = "stateless", ctc_weight: float = 0.3) -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig("lstm", ENC),
        predictor=PredictorConfig(kind=predictor, embed_dim=16, hidden_dim=16),
        joiner=JoinerConfig(joint_dim=24),
        vocab_size=vocab_size,
        ctc_weight=ctc_weight,
    )


@pytest.mark.parametrize("predictor", ["stateless", "lstm"])
def test_extended_model_keeps_the_old_tokens_logits(char_tokenizer, predictor) -> None:
    v = char_tokenizer.vocab_size
    torch.manual_seed(0)
    model = build_model(_config(v, predictor)).eval()
    enc = torch.randn(2, 7, 32)
    tokens = torch.tensor([[3, 5, 7], [1, 2, 0]])
    with torch.no_grad():
        before = model.join(enc, model.predict(tokens))
        ctc_before = model.ctc_head(enc)  # type: ignore[misc]
        step_before, _ = model.predict_step(tokens[:, 0], None)

    ext = extend_vocabulary(model, char_tokenizer, ["<sot>", "<eot>"])

    assert ext.vocab_size == v + 2 and model.vocab_size == v + 2
    assert model.joiner.vocab_size == v + 2 and model.predictor.vocab_size == v + 2
    with torch.no_grad():
        after = model.join(enc, model.predict(tokens))
        ctc_after = model.ctc_head(enc)  # type: ignore[misc]
        step_after, _ = model.predict_step(tokens[:, 0], None)
        with_new = model.join(enc, model.predict(torch.tensor([[v, 3, v + 1]])))
    assert after.shape == (*before.shape[:-1], v + 2)
    assert torch.equal(after[..., :v], before)  # same input, same logits for the old tokens
    assert torch.equal(ctc_after[..., :v], ctc_before)
    assert torch.equal(step_after, step_before)
    assert torch.isfinite(with_new).all()  # the new tokens can be fed to the predictor
    assert model.predictor.embedding.weight[v:].abs().sum() > 0  # new rows are initialised
    # the grown model saves and loads like one built with the larger vocabulary
    fresh = build_model(_config(v + 2, predictor))
    report = load_state_dict(fresh, model.state_dict())
    assert not report.missing and not report.unexpected


def test_extend_vocabulary_checks_its_inputs(char_tokenizer) -> None:
    model = build_model(_config(char_tokenizer.vocab_size + 1))
    with pytest.raises(InputDataError, match="vocabulary of"):
        extend_vocabulary(model, char_tokenizer, ["<sot>"])
    model = build_model(_config(char_tokenizer.vocab_size, ctc_weight=0.0))
    with pytest.raises(InputDataError, match="must look like <name>"):
        extend_vocabulary(model, char_tokenizer, ["sot"])
    assert model.vocab_size == char_tokenizer.vocab_size  # nothing changed on an error


class _CohortTransducer(nn.Module):
    """A transducer with a new cohort-input embedding beside the trained parts."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.cohort_embedding = nn.Embedding(4, 32)


def test_load_state_dict_reports_new_parameters_and_keeps_the_rest() -> None:
    torch.manual_seed(0)
    trained = build_model(_config(20))
    torch.manual_seed(1)
    grown = _CohortTransducer(build_model(_config(20)))
    cohort_init = grown.cohort_embedding.weight.detach().clone()
    state = {f"base.{k}": v for k, v in trained.state_dict().items()}

    report = load_state_dict(grown, state, source="base.pt")

    assert report.missing == ("cohort_embedding.weight",) and report.unexpected == ()
    assert set(report.loaded) == set(state)
    for k, v in trained.state_dict().items():
        assert torch.equal(grown.base.state_dict()[k], v)
    assert torch.equal(grown.cohort_embedding.weight, cohort_init)
    assert "1 new (cohort_embedding.weight)" in str(report)
    with pytest.raises(CheckpointError, match="lacks model tensors: cohort_embedding"):
        load_state_dict(grown, state, allow_missing=False)


def test_load_state_dict_refuses_other_shapes_and_unknown_tensors() -> None:
    model = build_model(_config(20))
    bigger = build_model(_config(22)).state_dict()
    with pytest.raises(CheckpointError, match=r"base\.pt does not fit.*joiner\.out\.weight"):
        load_state_dict(model, bigger, source="base.pt")
    extra = dict(model.state_dict()) | {"adapter.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="does not have: adapter.weight"):
        load_state_dict(model, extra)
    report = load_state_dict(model, extra, allow_unexpected=True)
    assert report.unexpected == ("adapter.weight",)
