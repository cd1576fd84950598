#!/usr/bin/env python3
"""A random-weight Wan2.1-T2V-1.3B pipeline in the diffusers layout, for scripts/bench-e2e.sh.

    python scripts/bench_e2e/make_pipeline.py OUT_DIR            # the real sizes (~14.5 GB on disk)
    python scripts/bench_e2e/make_pipeline.py OUT_DIR --small    # same structure, tiny sizes (seconds)
    python scripts/bench_e2e/make_pipeline.py OUT_DIR --check    # build on "meta", print parameter
                                                                 # counts and sizes, write nothing

OUT_DIR gets model_index.json, scheduler/, text_encoder/, tokenizer/, transformer/, vae/ as in
Wan-AI/Wan2.1-T2V-1.3B-Diffusers. The tokenizer files, the scheduler config and model_index.json
are copied from a template pipeline (--template, default ../shared/models/wan-tiny-t2v next to
the repository; `wan-server init-demo-model DIR` writes an equivalent one). The model configs
are the published ones:
  transformer  WanTransformer3DModel: 12 heads x 128 = 1536, ffn 8960, 30 layers, text_dim 4096
               (~1.42B parameters), stored bf16;
  text_encoder UMT5EncoderModel (UMT5-XXL encoder): d_model 4096, d_ff 10240, 64 heads x 64,
               24 layers, vocab 256384, gated-gelu (~5.68B parameters), stored bf16;
  vae          AutoencoderKLWan() with its defaults (base_dim 96, z_dim 16; ~127M), stored f32.

Weights are random but tame, so that activations stay finite: biases 0, norm weights (and the
VAE's RMS-norm gammas) 1, everything else normal with std min(0.02, 1/sqrt(fan_in)) (0.02 for
scale_shift_table), from a seeded generator. The modules are only ever built on the "meta"
device; each tensor is generated in chunks and streamed into safetensors files whose header is
computed up front, so peak memory is a few hundred MB whatever the model's size. Components
larger than --max-shard-gb are sharded with a `*.safetensors.index.json`, named as diffusers
and transformers name them. The text encoder's embedding is tied: only `shared.weight` is
stored (as in the shared tiny models).
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEMPLATE = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "models", "wan-tiny-t2v"))

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json: the one copy, kept by
# scripts/make_big_transformer.py (its keys minus "_class_name" are the model's arguments).
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..")))
from make_big_transformer import CONFIG_1P3B  # noqa: E402

DIT_FULL = {k: v for k, v in CONFIG_1P3B.items() if not k.startswith("_")}
DIT_SMALL = dict(DIT_FULL, attention_head_dim=32, num_attention_heads=2, ffn_dim=128, num_layers=2, text_dim=64)

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers text_encoder/config.json (google/umt5-xxl's encoder).
TE_FULL = {
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "vocab_size": 256384,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-06,
    "dropout_rate": 0.1,
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "tie_word_embeddings": True,
}
# vocab 1000: the template tokenizer's size.
TE_SMALL = dict(TE_FULL, d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2, vocab_size=1000)

VAE_FULL = {}  # AutoencoderKLWan() defaults: base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4]
VAE_SMALL = {"base_dim": 8}  # as the shared tiny models; 16 takes ~30 s to decode 320x192x9 on 2 cores

ST_DTYPE = {torch.float32: ("F32", 4), torch.bfloat16: ("BF16", 2), torch.float16: ("F16", 2)}
CHUNK_ELEMS = 1 << 25  # 32M elements per generated chunk (128 MB of f32)


def meta_model(kind: str, small: bool):
    """The component built on the meta device, and how to write its config."""
    with torch.device("meta"):
        if kind == "transformer":
            from diffusers import WanTransformer3DModel

            model = WanTransformer3DModel(**(DIT_SMALL if small else DIT_FULL))
        elif kind == "vae":
            from diffusers import AutoencoderKLWan

            model = AutoencoderKLWan(**(VAE_SMALL if small else VAE_FULL))
        elif kind == "text_encoder":
            from transformers import UMT5Config, UMT5EncoderModel

            cfg = UMT5Config(**(TE_SMALL if small else TE_FULL))
            cfg.architectures = ["UMT5EncoderModel"]
            model = UMT5EncoderModel(cfg)
        else:
            raise ValueError(kind)
    return model


def tensors_to_store(kind: str, model) -> list:
    """(name, shape) of every tensor the checkpoint holds, in state_dict order."""
    sd = model.state_dict()
    out = []
    for name, t in sd.items():
        if kind == "text_encoder" and name == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        out.append((name, tuple(t.shape)))
    return out


def init_kind(name: str, shape: tuple):
    """('zeros'|'ones'|'normal', std) for one tensor."""
    last = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    if last == "bias":
        return "zeros", 0.0
    if last == "gamma" or ("norm" in parent and last == "weight"):
        return "ones", 0.0
    if "scale_shift_table" in name or len(shape) < 2:
        return "normal", 0.02
    fan_in = math.prod(shape[1:])
    return "normal", min(0.02, 1.0 / math.sqrt(fan_in))


def produce(name: str, shape: tuple, dtype: torch.dtype, gen: torch.Generator):
    """Yields the tensor's bytes chunk by chunk (row-major order)."""
    kind, std = init_kind(name, shape)
    n = math.prod(shape)
    done = 0
    while done < n:
        m = min(CHUNK_ELEMS, n - done)
        if kind == "zeros":
            t = torch.zeros(m, dtype=dtype)
        elif kind == "ones":
            t = torch.ones(m, dtype=dtype)
        else:
            t = torch.randn(m, generator=gen, dtype=torch.float32).mul_(std).to(dtype)
        yield t.view(torch.uint8).numpy().tobytes()
        done += m


def write_safetensors(path: str, entries: list, dtype: torch.dtype, gen: torch.Generator) -> int:
    """Streams `entries` [(name, shape)] into one safetensors file; returns its data size."""
    st_name, itemsize = ST_DTYPE[dtype]
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape in entries:
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape in entries:
            for chunk in produce(name, shape, dtype, gen):
                f.write(chunk)
    os.replace(tmp, path)
    return off


def shard(entries: list, itemsize: int, max_bytes: int) -> list:
    shards, cur, cur_bytes = [], [], 0
    for name, shape in entries:
        nbytes = math.prod(shape) * itemsize
        if cur and cur_bytes + nbytes > max_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append((name, shape))
        cur_bytes += nbytes
    if cur:
        shards.append(cur)
    return shards


def write_component(out_dir: str, kind: str, model, dtype: torch.dtype, seed: int, max_bytes: int) -> None:
    d = os.path.join(out_dir, kind)
    os.makedirs(d, exist_ok=True)
    if kind == "text_encoder":
        model.config.dtype = "bfloat16" if dtype == torch.bfloat16 else "float32"
        model.config.save_pretrained(d)
        stem = "model"
    else:
        model.save_config(d)
        stem = "diffusion_pytorch_model"
    entries = tensors_to_store(kind, model)
    shards = shard(entries, ST_DTYPE[dtype][1], max_bytes)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    if len(shards) == 1:
        write_safetensors(os.path.join(d, f"{stem}.safetensors"), shards[0], dtype, gen)
    else:
        weight_map, total = {}, 0
        for i, sh in enumerate(shards):
            fname = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            total += write_safetensors(os.path.join(d, fname), sh, dtype, gen)
            for name, _ in sh:
                weight_map[name] = fname
            print(f"  {kind}/{fname}", flush=True)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(d, f"{stem}.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    n = sum(math.prod(s) for _, s in entries)
    print(f"wrote {kind}: {n / 1e6:.1f}M parameters, {ST_DTYPE[dtype][0]}, {len(shards)} file(s), {time.time() - t0:.1f} s", flush=True)


def copy_template(template: str, out_dir: str) -> None:
    for rel in ["model_index.json", "scheduler/scheduler_config.json", "tokenizer"]:
        src = os.path.join(template, rel)
        if not os.path.exists(src):
            sys.exit(f"template {template} has no {rel} (give --template a Wan t2v pipeline directory, e.g. one from `wan-server init-demo-model DIR`)")
    os.makedirs(os.path.join(out_dir, "scheduler"), exist_ok=True)
    shutil.copyfile(os.path.join(template, "model_index.json"), os.path.join(out_dir, "model_index.json"))
    shutil.copyfile(os.path.join(template, "scheduler/scheduler_config.json"), os.path.join(out_dir, "scheduler/scheduler_config.json"))
    tok = os.path.join(out_dir, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(template, "tokenizer"))):
        shutil.copyfile(os.path.join(template, "tokenizer", name), os.path.join(tok, name))
    with open(os.path.join(out_dir, "model_index.json")) as f:
        idx = json.load(f)
    if idx.get("_class_name") != "WanPipeline":
        sys.exit(f"template {template}: model_index.json is a {idx.get('_class_name')}, not a WanPipeline")


COMPONENTS = [  # (kind, dtype, seed offset)
    ("transformer", torch.bfloat16, 1),
    ("text_encoder", torch.bfloat16, 2),
    ("vae", torch.float32, 3),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--small", action="store_true", help="tiny sizes, same structure")
    ap.add_argument("--check", action="store_true", help="print parameter counts and sizes; write nothing")
    ap.add_argument("--template", default=DEFAULT_TEMPLATE, help="pipeline dir to copy tokenizer/, scheduler/, model_index.json from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shard-gb", type=float, default=5.0, help="largest safetensors file, GB (1e9 bytes)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    if a.check:
        total_bytes = 0
        for kind, dtype, _ in COMPONENTS:
            model = meta_model(kind, a.small)
            entries = tensors_to_store(kind, model)
            n = sum(math.prod(s) for _, s in entries)
            nbytes = n * ST_DTYPE[dtype][1]
            total_bytes += nbytes
            nshards = len(shard(entries, ST_DTYPE[dtype][1], int(a.max_shard_gb * 1e9)))
            print(f"{kind:13s} {type(model).__name__:22s} {n:>14,d} parameters ({n / 1e9:.3f}B) {len(entries):4d} tensors "
                  f"{ST_DTYPE[dtype][0]:4s} {nbytes / 1e9:7.2f} GB in {nshards} file(s)")
            params = {k for k, _ in model.named_parameters(remove_duplicate=False)}
            extra = [k for k, _ in entries if k not in params]
            if extra:
                print(f"    (stored tensors that are not parameters: {extra})")
        print(f"total {total_bytes / 1e9:.2f} GB")
        return

    if os.path.exists(os.path.join(a.out_dir, "model_index.json")):
        sys.exit(f"{a.out_dir} already holds a pipeline (model_index.json); remove it first")
    os.makedirs(a.out_dir, exist_ok=True)
    copy_template(a.template, a.out_dir)
    t0 = time.time()
    for kind, dtype, off in COMPONENTS:
        model = meta_model(kind, a.small)
        write_component(a.out_dir, kind, model, dtype, a.seed * 10 + off, int(a.max_shard_gb * 1e9))
        del model
    print(f"wrote {'small ' if a.small else ''}Wan2.1-T2V pipeline to {a.out_dir} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
