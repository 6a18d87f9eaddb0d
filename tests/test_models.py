import pytest
import torch

from gsam2.core import InputError, ModelLoadError, load_detector, load_segmenter
from gsam2.core.devices import inference_context, resolve_device
from gsam2.core.backends import SAM2_CHECKPOINTS


def test_models_load_once_per_process(tiny_models):
    first = load_detector(str(tiny_models["grounding-dino"]), device="cpu")
    again = load_detector(str(tiny_models["grounding-dino"]), device="cpu")
    assert first is again
    assert load_segmenter(str(tiny_models["sam2"]), device="cpu") is load_segmenter(
        str(tiny_models["sam2"]), device="cpu"
    )


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"detector checkpoint '.*missing': no such file or folder"):
        load_detector(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(ModelLoadError, match="segmenter checkpoint '.*missing': no such file or folder"):
        load_segmenter(str(tmp_path / "missing"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="could not load segmenter checkpoint"):
        load_segmenter(str(tmp_path / "empty"), device="cpu")


def test_hub_id_offline_is_a_clear_error():
    # HF_HUB_OFFLINE=1 in the tests: the default checkpoint cannot be fetched.
    with pytest.raises(ModelLoadError, match="IDEA-Research/grounding-dino-tiny"):
        load_detector(device="cpu")


def test_unknown_backend():
    with pytest.raises(InputError, match="backend 'yolo' is unknown"):
        load_detector("x", backend="yolo")


def test_sam2_size_names_map_to_hub_checkpoints():
    assert SAM2_CHECKPOINTS["large"] == "facebook/sam2.1-hiera-large"
    assert SAM2_CHECKPOINTS["tiny"] == "facebook/sam2.1-hiera-tiny"


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None and not (torch.backends.mps.is_available()):
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="not a valid torch device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cpu_inference_stays_float32():
    with inference_context(torch.device("cpu")):
        out = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    assert out.dtype == torch.float32 and not out.requires_grad


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("mps", "Apple MPS is not available"),
        ("xpu", "Intel XPU is not available"),
        ("cuda:7", "CUDA is not available"),
        ("meta", "meta is not supported"),
    ],
)
def test_missing_accelerators_are_one_line_errors(device, message):
    if device == "mps" and torch.backends.mps.is_available() or device == "xpu" and hasattr(torch, "xpu") and \
            torch.xpu.is_available() or device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip(f"{device} exists here")
    with pytest.raises(InputError, match=message) as error:
        resolve_device(device)
    assert len(str(error.value).splitlines()) == 1


def test_cli_and_operator_report_a_missing_device_cleanly(tmp_path, tiny_models):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "gsam2.cli", "image", "--prompt", "cat.", "--input", str(tmp_path),
         "--output", str(tmp_path / "out"), "--device", "xpu", "--detector", str(tiny_models["grounding-dino"])],
        capture_output=True, text=True, timeout=300,
    )
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        pytest.skip("xpu exists here")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: device 'xpu' was requested but Intel XPU is not available on this machine"


@pytest.mark.parametrize("checkpoint", ["/no/such/grounding-dino", "./missing-model", "models/sub/missing"])
def test_a_missing_local_checkpoint_is_named_as_a_path(checkpoint):
    from gsam2.core import ModelLoadError, load_detector

    with pytest.raises(ModelLoadError, match="no such file or folder") as error:
        load_detector(checkpoint, device="cpu")
    assert "Repo id" not in str(error.value)


def test_a_small_slice_size_alone_gets_a_fitting_overlap(tiny_models):
    from gsam2.core import load_detector

    sliced = load_detector(str(tiny_models["grounding-dino"]), device="cpu", slice_size=64)
    assert sliced.slice_wh == (64, 64) and sliced.overlap_wh == (16, 16)
    assert load_detector(str(tiny_models["grounding-dino"]), device="cpu", slice_size=1024).overlap_wh == (128, 128)


def test_sam2_loads_with_pytorch_sdpa_attention(tiny_models):
    """SAM 2's attention runs through torch's scaled_dot_product_attention (flash / memory-efficient kernels
    on a GPU): transformers picks "sdpa" for models that declare ``_supports_sdpa`` unless a loader asks for
    another implementation. Grounding DINO declares no SDPA support in transformers (eager + deformable)."""
    segmenter = load_segmenter(str(tiny_models["sam2"]), device="cpu")
    assert segmenter.model.config._attn_implementation == "sdpa"
    assert segmenter.model.config.vision_config._attn_implementation == "sdpa"
