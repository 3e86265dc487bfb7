"""Model forward speed: ast_audio vs transformers (eager and sdpa), plus our int8 and onnxruntime paths.

Same random weights for all (a transformers AST of the default AudioSet geometry, saved and loaded by both),
batches 1, 2, 4, 8 of (1024, 128) inputs, implementations run alternately. Prints ms per batch, clips/s,
the speedup over the reference's sdpa, achieved GFLOP/s and its share of this machine's float32 matmul
GFLOP/s (a 4096x4096 matmul measured in the same run). On a GPU it also runs float16.

    python benchmarks/bench_model.py [--batches 1 2 4 8] [--repeats 2] [--no-int8] [--no-onnx] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np
import torch


def flops_per_clip(config) -> float:
    """Multiply-adds x 2 of one forward pass: patch conv, per-layer projections, attention, MLP, head."""
    tokens = config.num_patches + 2
    hidden, inner = config.hidden_size, config.intermediate_size
    conv = config.num_patches * hidden * config.patch_size**2
    per_layer = tokens * (4 * hidden * hidden + 2 * hidden * inner) + 2 * tokens * tokens * hidden
    head = hidden * config.num_labels
    return 2.0 * (conv + config.num_hidden_layers * per_layer + head)


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ a
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * 4096**3 / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def real_signals(count: int) -> list[np.ndarray]:
    """Tones, chirps, noise bursts and mixtures of 10 s: inputs with the structure of real sounds."""
    rng = np.random.default_rng(0)
    t = np.arange(160000) / 16000
    clips = []
    for i in range(count):
        f0 = rng.uniform(100, 3000)
        tone = 0.3 * np.sin(2 * np.pi * f0 * t + 2 * np.sin(2 * np.pi * rng.uniform(0.5, 6) * t))
        bursts = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * rng.uniform(0.2, 2) * t) > 0.5) * 0.2
        chirp = 0.2 * np.sin(2 * np.pi * np.cumsum(np.linspace(f0, rng.uniform(200, 7000), len(t))) / 16000)
        clips.append([tone, bursts, chirp, tone + bursts][i % 4].astype(np.float32))
    return clips


def agree(checkpoint: str, count: int, device: torch.device, int8: bool, onnx: bool) -> dict:
    """Cosine similarity of logits and top-1 agreement of int8 / onnxruntime against float32 PyTorch."""
    from ast_audio import ASTFeatureExtractor, ASTForAudioClassification
    from ast_audio.export import onnx_session, quantize_int8

    features = ASTFeatureExtractor()(real_signals(count), sampling_rate=16000, return_tensors="pt")["input_values"]
    model = ASTForAudioClassification.from_pretrained(checkpoint).to(device)
    with torch.inference_mode():
        reference = torch.cat([model(features[i : i + 4].to(device)).logits.cpu() for i in range(0, count, 4)])
        others = {}
        if int8:
            quantized = quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint))
            others["int8"] = torch.cat([quantized(features[i : i + 4]).logits for i in range(0, count, 4)])
        if onnx:
            session = onnx_session(os.path.join(checkpoint, "model.onnx"), device)
            others["onnxruntime"] = torch.cat([
                torch.from_numpy(session.run(["logits"], {"input_values": features[i : i + 4].numpy()})[0])
                for i in range(0, count, 4)
            ])
    ranked = reference.sort(dim=1, descending=True).values
    margin = float((ranked[:, 0] - ranked[:, 1]).min())  # near-ties flip under any perturbation
    return {
        name: {"min_cosine": float(torch.nn.functional.cosine_similarity(logits, reference).min()),
               "top1": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
               "mean_abs_logit_diff": float((logits - reference).abs().mean()),
               "min_top1_margin_float32": margin}
        for name, logits in others.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--agreement-clips", type=int, default=16,
                        help="real-signal clips for the int8 / onnxruntime agreement check (0: skip)")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import transformers

    from ast_audio import ASTForAudioClassification
    from ast_audio.export import LogitsAndPooled, export_onnx, onnx_session, quantize_int8

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    transformers.ASTForAudioClassification(transformers.ASTConfig(num_labels=527)).save_pretrained(tmp)
    config = ASTForAudioClassification.from_pretrained(tmp).config
    flops = flops_per_clip(config)

    dtypes = [torch.float32] + ([torch.float16] if device.type == "cuda" else [])
    rows = []
    for dtype in dtypes:
        runners = {}
        for attn in ("sdpa", "eager"):
            ours = ASTForAudioClassification.from_pretrained(tmp, attn_implementation=attn, dtype=dtype).to(device)
            ref = transformers.ASTForAudioClassification.from_pretrained(tmp, attn_implementation=attn, dtype=dtype)
            runners[f"ours {attn}"] = LogitsAndPooled(ours.eval())
            runners[f"transformers {attn}"] = ref.to(device).eval()
        if not args.no_compile:
            runners["ours compiled"] = torch.compile(LogitsAndPooled(
                ASTForAudioClassification.from_pretrained(tmp, dtype=dtype).to(device).eval()))
        if dtype == torch.float32 and device.type == "cpu" and not args.no_int8:
            runners["ours int8"] = LogitsAndPooled(quantize_int8(ASTForAudioClassification.from_pretrained(tmp)))
        session = None
        if dtype == torch.float32 and not args.no_onnx:
            path = os.path.join(tmp, "model.onnx")
            export_onnx(ASTForAudioClassification.from_pretrained(tmp), path, verify=False)
            session = onnx_session(path, device)
            runners["ours onnxruntime"] = lambda x: session.run(["logits"], {"input_values": x.cpu().numpy()})
        peak = matmul_gflops(device, dtype)
        for batch in args.batches:
            x = torch.randn(batch, config.max_length, config.num_mel_bins, device=device, dtype=dtype)
            times: dict[str, list[float]] = {name: [] for name in runners}
            with torch.inference_mode():
                for name, run in runners.items():
                    run(x)  # warm-up
                for _ in range(args.repeats):
                    for name, run in runners.items():
                        sync(device)
                        start = time.perf_counter()
                        run(x)
                        sync(device)
                        times[name].append(time.perf_counter() - start)
            reference = min(times["transformers sdpa"])
            for name, measured in times.items():
                best = min(measured)
                gflops = flops * batch / best / 1e9
                rows.append(dict(dtype=str(dtype).replace("torch.", ""), batch=batch, implementation=name,
                                 ms_per_batch=best * 1e3, clips_per_s=batch / best,
                                 speedup_vs_transformers_sdpa=reference / best, gflops=gflops,
                                 share_of_matmul_peak=gflops / peak, matmul_gflops=peak))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device}, "
          f"{torch.get_num_threads()} threads; {flops / 1e9:.0f} GFLOP per clip; best of {args.repeats}")
    header = (f"{'dtype':8s} {'batch':>5s} {'implementation':22s} {'ms/batch':>10s} {'clips/s':>8s} "
              f"{'x sdpa ref':>10s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['dtype']:8s} {r['batch']:5d} {r['implementation']:22s} {r['ms_per_batch']:10.1f} "
              f"{r['clips_per_s']:8.2f} {r['speedup_vs_transformers_sdpa']:9.2f}x {r['gflops']:8.1f} "
              f"{100 * r['share_of_matmul_peak']:8.0f}%")
    print(f"matmul peak: {', '.join(f'{r}' for r in sorted({round(r['matmul_gflops'], 1) for r in rows}))} GFLOP/s")
    if args.agreement_clips:
        agreement = agree(tmp, args.agreement_clips, device, not args.no_int8 and device.type == "cpu", not args.no_onnx)
        print(f"agreement with float32 on {args.agreement_clips} real-signal clips:")
        for name, values in agreement.items():
            print(f"  {name:12s} min cosine {values['min_cosine']:.5f}  top-1 agreement {100 * values['top1']:.1f}%  "
                  f"mean |logit diff| {values['mean_abs_logit_diff']:.4f} (smallest float32 top-1 margin "
                  f"{values['min_top1_margin_float32']:.4f})")
        rows.append({"agreement": agreement})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
