#!/usr/bin/env python3
"""Dev script (not used by any test): a random-weight Wan2.1-T2V-1.3B transformer, a parity
fixture for it computed with diffusers, and PyTorch timings of its forward.

Needs `pip install torch diffusers transformers safetensors` (a venv outside the repo is fine).

    python scripts/make_big_transformer.py model   /work/big/wan-1.3b-random
    python scripts/make_big_transformer.py fixture /work/big/wan-1.3b-random /work/big/fixtures/transformer_1p3b --valid 24
    python scripts/make_big_transformer.py bench   /work/big/wan-1.3b-random /work/big/fixtures/transformer_1p3b --dtype f32

The model directory gets `transformer/` in diffusers' layout (config.json + safetensors, ~5.3 GB
f32). The fixture directory follows the shared fixture format (manifest.json, inputs.safetensors,
outputs.safetensors) with `model` pointing at the model directory, so `cargo test --test parity`
(WAN_FIXTURES=...) and `wan-server bench` run it as they run the tiny ones.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import load_file, save_file

# The published Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json.
CONFIG_1P3B = {
    "_class_name": "WanTransformer3DModel",
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 8960,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "num_attention_heads": 12,
    "num_layers": 30,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}


def make_model(out_dir: str, seed: int) -> None:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    cfg = {k: v for k, v in CONFIG_1P3B.items() if not k.startswith("_")}
    model = WanTransformer3DModel(**cfg)
    # PyTorch's default init leaves the RMS/LayerNorm weights at one; give them some spread so a
    # wrong norm shows up in the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm2.weight"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(os.path.join(out_dir, "transformer"), safe_serialization=True, max_shard_size="2GB")
    print("wrote", out_dir, sum(p.numel() for p in model.parameters()), "parameters")


def load_model(model_dir: str, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(model_dir, subfolder="transformer", torch_dtype=dtype).eval()


def make_inputs(valid: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(1, 512, 4096)
    text[:, :valid] = 0.2 * torch.randn(1, valid, 4096, generator=g)
    return {
        "hidden_states": torch.randn(1, 16, 5, 16, 16, generator=g),
        "timestep": torch.tensor([937], dtype=torch.int64),
        "encoder_hidden_states": text,
    }


@torch.no_grad()
def make_fixture(model_dir: str, fixture_dir: str, valid: int, seed: int) -> None:
    torch.set_num_threads(2)
    inputs = make_inputs(valid, seed)
    model = load_model(model_dir, torch.float32)
    out32 = model(**inputs, return_dict=False)[0]
    temb32 = model.condition_embedder(inputs["timestep"], inputs["encoder_hidden_states"])[0]
    # The tolerance comes, as for the shared fixtures, from the float32-vs-float64 difference.
    model = model.to(torch.float64)
    inputs64 = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    out64 = model(**inputs64, return_dict=False)[0]
    err = (out32.double() - out64).abs().max().item()
    atol = max(1e-4, 10 * err)
    os.makedirs(fixture_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(fixture_dir, "inputs.safetensors"))
    save_file({"output": out32.contiguous(), "temb": temb32.contiguous()}, os.path.join(fixture_dir, "outputs.safetensors"))
    manifest = {
        "name": os.path.basename(os.path.normpath(fixture_dir)),
        "set": "big",
        "kind": "transformer",
        "model": os.path.relpath(model_dir, fixture_dir),
        "description": f"One forward of a random-weight Wan2.1-T2V-1.3B transformer (diffusers, float32, CPU): latent (1,16,5,16,16) -> 320 tokens, 512 text tokens of which {valid} non-zero.",
        "call": {"function": "WanTransformer3DModel.forward", "patch_tokens": 320, "text_valid_lengths": [valid], "text_len_total": 512},
        "tensors": {
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in inputs.items()},
            "outputs": {"output": {"shape": list(out32.shape), "dtype": "float32"}, "temb": {"shape": list(temb32.shape), "dtype": "float32"}},
        },
        "tolerance": {"atol": atol, "rtol": 1e-4},
        "tolerance_basis": {"f32_vs_f64_max_abs_err": {"output": err}, "rule": "atol = max(1e-4, 10 x max |torch f32 - torch f64|)"},
        "generated_with": {"torch": torch.__version__},
    }
    with open(os.path.join(fixture_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {fixture_dir}: f32-vs-f64 max abs err {err:.3e}, atol {atol:.3e}")


@torch.no_grad()
def bench(model_dir: str, fixture_dir: str, dtype_name: str, runs: int) -> None:
    import resource

    torch.set_num_threads(2)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    inputs = load_file(os.path.join(fixture_dir, "inputs.safetensors"))
    expected = load_file(os.path.join(fixture_dir, "outputs.safetensors"))["output"]
    model = load_model(model_dir, dtype)
    inputs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    model(**inputs, return_dict=False)  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = model(**inputs, return_dict=False)[0]
        times.append(time.perf_counter() - t)
    times.sort()
    err = (out.float() - expected).abs().max().item()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {dtype_name}: median={times[len(times) // 2]:.4f} s min={times[0]:.4f} s max={times[-1]:.4f} s max_abs_err={err:.3e} peak_rss_mib={rss:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("out_dir")
    m.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("fixture")
    f.add_argument("model_dir")
    f.add_argument("fixture_dir")
    f.add_argument("--valid", type=int, default=24)
    f.add_argument("--seed", type=int, default=1)
    b = sub.add_parser("bench")
    b.add_argument("model_dir")
    b.add_argument("fixture_dir")
    b.add_argument("--dtype", default="f32")
    b.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "model":
        make_model(a.out_dir, a.seed)
    elif a.cmd == "fixture":
        make_fixture(a.model_dir, a.fixture_dir, a.valid, a.seed)
    else:
        bench(a.model_dir, a.fixture_dir, a.dtype, a.runs)


if __name__ == "__main__":
    main()
