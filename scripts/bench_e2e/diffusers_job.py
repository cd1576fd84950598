#!/usr/bin/env python3
"""One text-to-video job with diffusers' WanPipeline on the CPU, timed stage by stage (the
reference side of scripts/bench-e2e.sh).

    python scripts/bench_e2e/diffusers_job.py --model DIR --width 320 --height 192 --frames 9 \
        --steps 4 --guidance 5 --seed 42 --text-encoder-dtype bf16 --dtype f32 --out x.mp4

Prints `key=value` lines on stdout: load_s, text_encode_s, steps_s, vae_decode_s, encode_mp4_s,
total_s (from process start, before the imports) and peak_rss_mib (getrusage ru_maxrss).

The job is WanPipeline.__call__ cut at its stage boundaries, with the same math:
  text_encode_s  pipe.encode_prompt(prompt, negative_prompt, CFG, max_sequence_length=512), under
                 no_grad as __call__ runs it (the embeddings are cast to the transformer's dtype
                 inside the pipeline call, as in one call);
  steps_s        pipe(prompt_embeds=..., negative_prompt_embeds=..., output_type="latent"):
                 timesteps, the seeded latents (torch.Generator().manual_seed(seed)) and the
                 denoising loop with classifier-free guidance;
  vae_decode_s   the tail of __call__: latents to the VAE's dtype, latents / (1/std) + mean,
                 vae.decode, video_processor.postprocess_video(output_type="np");
  encode_mp4_s   diffusers.utils.export_to_video(frames, out, fps) (imageio + FFmpeg).
The VAE always runs in float32; the text encoder and the transformer in the dtypes given.
"""

import time

T0 = time.time()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402

DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="A red fox running through fresh snow, cinematic lighting")
    ap.add_argument("--negative-prompt", default=None)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--text-encoder-dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="the transformer's dtype")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: every CPU this process may use)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import numpy as np
    import torch

    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    from diffusers import WanPipeline
    from diffusers.utils import export_to_video

    te_dtype = getattr(torch, DTYPES[a.text_encoder_dtype])
    dit_dtype = getattr(torch, DTYPES[a.dtype])

    try:  # diffusers >= 0.42 names it `dtype`, earlier ones `torch_dtype`
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

        dtype_kw = "dtype"
    except ImportError:
        dtype_kw = "torch_dtype"

    t = time.time()
    pipe = WanPipeline.from_pretrained(
        a.model,
        **{dtype_kw: {"text_encoder": te_dtype, "transformer": dit_dtype, "vae": torch.float32, "default": torch.float32}},
    )
    pipe.to("cpu")
    pipe.set_progress_bar_config(disable=True)
    load_s = time.time() - t
    assert pipe.text_encoder.dtype == te_dtype, pipe.text_encoder.dtype
    assert pipe.transformer.dtype == dit_dtype, pipe.transformer.dtype
    assert pipe.vae.dtype == torch.float32, pipe.vae.dtype
    print(f"threads={threads}", flush=True)
    print(f"dtypes=text_encoder:{a.text_encoder_dtype},transformer:{a.dtype},vae:f32", flush=True)
    print(f"load_s={load_s:.3f}", flush=True)

    cfg = a.guidance > 1.0  # WanPipeline.do_classifier_free_guidance
    device = pipe._execution_device
    with torch.no_grad():
        t = time.time()
        prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
            prompt=a.prompt,
            negative_prompt=a.negative_prompt,
            do_classifier_free_guidance=cfg,
            num_videos_per_prompt=1,
            max_sequence_length=512,  # __call__'s default (encode_prompt's own is 226)
            device=device,
        )
        text_encode_s = time.time() - t
        print(f"text_encode_s={text_encode_s:.3f}", flush=True)

        t = time.time()
        latents = pipe(
            prompt=None,
            negative_prompt=None,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            height=a.height,
            width=a.width,
            num_frames=a.frames,
            num_inference_steps=a.steps,
            guidance_scale=a.guidance,
            generator=torch.Generator(device="cpu").manual_seed(a.seed),
            output_type="latent",
            return_dict=False,
            max_sequence_length=512,
        )[0]
        steps_s = time.time() - t
        print(f"steps_s={steps_s:.3f}", flush=True)

        # WanPipeline.__call__ after the loop, for output_type != "latent".
        t = time.time()
        vae = pipe.vae
        latents = latents.to(vae.device, dtype=vae.dtype)
        latents_mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        latents_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        latents = latents / latents_std + latents_mean
        video = vae.decode(latents, return_dict=False)[0]
        video = pipe.video_processor.postprocess_video(video, output_type="np")
        vae_decode_s = time.time() - t
        print(f"vae_decode_s={vae_decode_s:.3f}", flush=True)

    t = time.time()
    frames = video[0]
    if not np.isfinite(frames).all():
        print("warning=the decoded video is not finite", flush=True)
    export_to_video(frames, a.out, fps=a.fps)
    encode_mp4_s = time.time() - t
    print(f"encode_mp4_s={encode_mp4_s:.3f}", flush=True)
    print(f"frames={len(frames)}", flush=True)
    print(f"total_s={time.time() - T0:.3f}", flush=True)
    print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}", flush=True)


if __name__ == "__main__":
    main()
