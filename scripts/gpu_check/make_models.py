"""Writes a random-weight Wan2.1-T2V-1.3B pipeline in the diffusers layout, at the real configs.

Run on the GPU machine by scripts/gpu-check.sh (no network there): the DiT (1.3B) and the VAE
through diffusers' own classes, the UMT5-XXL text encoder (5.7B) written tensor by tensor under
transformers' checkpoint names (so transformers is not needed), the tokenizer and scheduler
copied from a tiny shared model (any tokenizer will do: only ids below the vocabulary matter).
Weights are drawn on the GPU, so the whole pipeline is written in about a minute.

usage: make_models.py OUT_DIR TINY_MODEL_DIR
With GPU_CHECK_SMALL=1 the same pipeline is written at toy sizes (two layers, narrow widths,
head dim 128 kept), for a dry run of the check's plumbing on a CPU machine.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

DIT_1_3B = {
    "_class_name": "WanTransformer3DModel",
    "patch_size": [1, 2, 2],
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}

UMT5_XXL = {
    "architectures": ["UMT5EncoderModel"],
    "model_type": "umt5",
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "vocab_size": 256384,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}


SMALL = os.environ.get("GPU_CHECK_SMALL") == "1"
if SMALL:
    DIT_1_3B.update(num_attention_heads=2, num_layers=2, ffn_dim=256, text_dim=64, freq_dim=32)
    UMT5_XXL.update(d_model=64, d_ff=128, d_kv=32, num_heads=2, num_layers=2, vocab_size=1000)


def write_text_encoder(out: Path, device: str) -> None:
    """UMT5EncoderModel's state dict, random normal(0, 0.02) weights and unit norms, in bf16."""
    c = UMT5_XXL
    d, ff, inner, heads = c["d_model"], c["d_ff"], c["d_kv"] * c["num_heads"], c["num_heads"]
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()

    def ones(n):
        return torch.ones(n, dtype=torch.bfloat16)

    tensors = {"shared.weight": rnd(c["vocab_size"], d), "encoder.final_layer_norm.weight": ones(d)}
    for i in range(c["num_layers"]):
        p = f"encoder.block.{i}.layer"
        for name, shape in [("q", (inner, d)), ("k", (inner, d)), ("v", (inner, d)), ("o", (d, inner))]:
            tensors[f"{p}.0.SelfAttention.{name}.weight"] = rnd(*shape)
        tensors[f"{p}.0.SelfAttention.relative_attention_bias.weight"] = rnd(c["relative_attention_num_buckets"], heads)
        tensors[f"{p}.0.layer_norm.weight"] = ones(d)
        tensors[f"{p}.1.DenseReluDense.wi_0.weight"] = rnd(ff, d)
        tensors[f"{p}.1.DenseReluDense.wi_1.weight"] = rnd(ff, d)
        tensors[f"{p}.1.DenseReluDense.wo.weight"] = rnd(d, ff)
        tensors[f"{p}.1.layer_norm.weight"] = ones(d)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(c, indent=2))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def main() -> None:
    out, tiny = Path(sys.argv[1]), Path(sys.argv[2])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = {k: v for k, v in DIT_1_3B.items() if not k.startswith("_")}
    with torch.device(device):
        dit = WanTransformer3DModel(**cfg).to(torch.bfloat16)
    dit.save_pretrained(out / "transformer", safe_serialization=True)
    del dit
    with torch.device(device):
        vae = AutoencoderKLWan(base_dim=8, z_dim=16) if SMALL else AutoencoderKLWan()
    vae.save_pretrained(out / "vae", safe_serialization=True)
    del vae
    write_text_encoder(out / "text_encoder", device)
    for part in ["tokenizer", "scheduler"]:
        shutil.copytree(tiny / part, out / part, dirs_exist_ok=True)
    shutil.copy(tiny / "model_index.json", out / "model_index.json")
    print(f"make_models: wrote {out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
