"""Times diffusers' WanTransformer3DModel forward (PyTorch SDPA attention) on the GPU, the
reference for our `wan-gpu-check forward` on the same directory and inputs of the same shapes.

usage: torch_forward.py TRANSFORMER_DIR WIDTH HEIGHT FRAMES RUNS
prints: torch_forward_median_s=... torch_forward_min_s=... torch_forward_peak_gib=... torch_sdpa=...
"""

import statistics
import sys
import time

import torch
from diffusers import WanTransformer3DModel


def main() -> None:
    path, width, height, frames, runs = sys.argv[1], *map(int, sys.argv[2:6])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = WanTransformer3DModel.from_pretrained(path, torch_dtype=torch.bfloat16).to(dev).eval()
    cfg = model.config
    latent_frames = (frames - 1) // 4 + 1
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(1, cfg.in_channels, latent_frames, height // 8, width // 8, generator=g, device=dev).to(torch.bfloat16)
    text = torch.zeros(1, 512, cfg.text_dim, device=dev, dtype=torch.bfloat16)
    text[:, :60] = torch.randn(1, 60, cfg.text_dim, generator=g, device=dev).to(torch.bfloat16)
    t = torch.tensor([500], device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    times = []
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for i in range(runs + 1):
            sync()
            start = time.perf_counter()
            model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
            sync()
            if i > 0:
                times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0.0
    flash = torch.backends.cuda.flash_sdp_enabled()
    print(
        f"torch_forward_median_s={statistics.median(times):.4f} torch_forward_min_s={min(times):.4f} "
        f"torch_forward_peak_gib={peak:.2f} torch_sdpa_flash={flash} torch_version={torch.__version__}"
    )


if __name__ == "__main__":
    main()
