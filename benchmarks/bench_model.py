"""Model forward speed: ast_audio vs transformers (eager and sdpa), plus our int8 and onnxruntime paths.

Same random weights for all (a transformers AST of the default AudioSet geometry, saved and loaded by both),
batches 1, 2, 4, 8 of (1024, 128) inputs, implementations run alternately. Prints ms per batch, clips/s,
the speedup over the reference's sdpa, achieved GFLOP/s and its share of this machine's float32 matmul
GFLOP/s (a 4096x4096 matmul measured in the same run); FLOPs are the full model's, as the reference computes
them (ours skips most of the last layer, see ASTModel.pool). On a GPU it also runs float16.

Then it checks int8 and onnxruntime against float32 PyTorch on labelled real-signal clips (tones, noise
bursts, chirps; low and high): once with the random head, whose top logits are near-ties that any
perturbation flips, and once with a head trained as a linear probe on other clips of the same classes, whose
margins are like a trained model's.

    python benchmarks/bench_model.py [--batches 1 2 4 8] [--repeats 2] [--no-int8] [--no-onnx] [--agreement-per-class 4] [--json out.json]
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
from table import print_table


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


SIGNAL_KINDS = ("tone", "bursts", "chirp", "tone+bursts")


def real_signal(kind: str, low: bool, rng: np.random.Generator) -> np.ndarray:
    """10 s of a tone, noise bursts, a chirp or a tone with bursts, low (100-600 Hz) or high (1.5-4 kHz):
    inputs with the structure of real sounds."""
    t = np.arange(160000) / 16000
    f0 = rng.uniform(100, 600) if low else rng.uniform(1500, 4000)
    tone = 0.3 * np.sin(2 * np.pi * f0 * t + 2 * np.sin(2 * np.pi * rng.uniform(0.5, 6) * t))
    gate = np.sin(2 * np.pi * rng.uniform(0.2, 2) * t) > 0.5
    # Bursts of noise band-limited around f0 (a one-pole resonator), so that "low" and "high" differ.
    from scipy.signal import lfilter

    radius, angle = 0.97, 2 * np.pi * f0 / 16000
    noise = lfilter([1 - radius], [1, -2 * radius * np.cos(angle), radius**2], rng.standard_normal(len(t)))
    bursts = 0.5 * noise / noise.std() * gate * 0.2
    chirp = 0.2 * np.sin(2 * np.pi * np.cumsum(np.linspace(f0, f0 * rng.uniform(1.5, 2.0), len(t))) / 16000)
    signal = {"tone": tone, "bursts": bursts, "chirp": chirp, "tone+bursts": tone + bursts}[kind]
    return signal.astype(np.float32)


def labelled_signals(per_class: int, seed: int) -> tuple[list[np.ndarray], torch.Tensor]:
    """`per_class` clips of each of 8 classes (4 kinds x low/high frequency) and their labels."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for _ in range(per_class):
        for label, (kind, low) in enumerate((k, low) for k in SIGNAL_KINDS for low in (True, False)):
            clips.append(real_signal(kind, low, rng))
            labels.append(label)
    return clips, torch.tensor(labels)


def fit_probe_head(model, embeddings: torch.Tensor, labels: torch.Tensor, steps: int = 500) -> None:
    """Train the classification head (LayerNorm + Linear) on pooled embeddings, as a linear probe: a head
    with trained margins, so that top-1 agreement is not decided by near-ties of random logits. The encoder
    stays as it is."""
    head = model.classifier
    parameters = list(head.parameters())
    optimizer = torch.optim.Adam(parameters, lr=0.01, weight_decay=1e-4)
    embeddings = embeddings.clone()  # a clone: embeddings may come from inference mode
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(embeddings), labels).backward()
            optimizer.step()


def agree(checkpoint: str, per_class: int, device: torch.device, int8: bool, onnx: bool) -> dict:
    """Cosine similarity of logits and top-1 agreement of int8 / onnxruntime against float32 PyTorch, on
    labelled real-signal clips, for the random head and for a linear-probe head trained on other clips."""
    from ast_audio import ASTFeatureExtractor, ASTForAudioClassification
    from ast_audio.onnx import export_onnx, int8_onnx_path, onnx_session, quantize_onnx_int8
    from ast_audio.quantize import quantize_int8

    extractor = ASTFeatureExtractor()

    def features_of(clips: list[np.ndarray]) -> torch.Tensor:
        return extractor(clips, sampling_rate=16000, return_tensors="pt")["input_values"]

    def batched(fn, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i : i + 4]) for i in range(0, len(x), 4)])

    train_clips, train_labels = labelled_signals(per_class, seed=1)
    test_clips, test_labels = labelled_signals(per_class, seed=2)
    train, test = features_of(train_clips), features_of(test_clips)
    results = {}
    for head in ("random head", "probe head"):
        # The probe gets a new head with one output per class.
        head_settings = dict(num_labels=8, ignore_mismatched_sizes=True) if head == "probe head" else {}
        model = ASTForAudioClassification.from_pretrained(checkpoint, **head_settings).eval()
        if head == "probe head":
            with torch.inference_mode():
                embeddings = batched(lambda x: model.forward_features(x.to(device)).cpu(), train)
            fit_probe_head(model, embeddings, train_labels)
        with torch.inference_mode():
            reference = batched(lambda x: model.to(device)(x.to(device)).logits.cpu(), test)
            others = {}
            if int8:
                quantized = quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint, **head_settings))
                quantized.classifier.load_state_dict(model.classifier.state_dict())
                others["int8"] = batched(lambda x: quantized(x).logits, test)
        if onnx:
            path = os.path.join(checkpoint, f"agreement-{head.split()[0]}.onnx")
            export_onnx(model.cpu(), path, verify=False)
            variants = {"onnxruntime": path}
            if int8:
                variants["onnxruntime int8"] = quantize_onnx_int8(path, int8_onnx_path(path))
            for name, file in variants.items():
                session = onnx_session(file, device)
                others[name] = batched(
                    lambda x: torch.from_numpy(session.run(["logits"], {"input_values": x.numpy()})[0]), test
                )
        ranked = reference.sort(dim=1, descending=True).values
        margin = float((ranked[:, 0] - ranked[:, 1]).min())  # near-ties flip under any perturbation
        for name, logits in others.items():
            results[f"{name}, {head}"] = {
                "clips": len(test),
                "min_cosine": float(torch.nn.functional.cosine_similarity(logits, reference).min()),
                "top1": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
                "mean_abs_logit_diff": float((logits - reference).abs().mean()),
                "min_top1_margin_float32": margin,
                "float32_probe_accuracy": (
                    float((reference.argmax(1) == test_labels).float().mean()) if head == "probe head" else None
                ),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 2, 4, 8],
                        help="batch sizes to time (none: only the agreement check)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--agreement-per-class", type=int, default=4,
                        help="clips per class (8 classes) for training the probe head and again for the int8 / "
                             "onnxruntime agreement check (0: skip)")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import transformers

    from ast_audio import ASTForAudioClassification
    from ast_audio.model.logits_and_pooled import LogitsAndPooled
    from ast_audio.onnx import export_onnx, int8_onnx_path, onnx_session, quantize_onnx_int8
    from ast_audio.quantize import quantize_int8

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    transformers.ASTForAudioClassification(transformers.ASTConfig(num_labels=527)).save_pretrained(tmp)
    config = ASTForAudioClassification.from_pretrained(tmp).config
    flops = flops_per_clip(config)

    dtypes = [torch.float32] + ([torch.float16] if device.type == "cuda" else []) if args.batches else []
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
            if device.type == "cpu" and not args.no_int8:
                session_int8 = onnx_session(quantize_onnx_int8(path, int8_onnx_path(path)))
                runners["ours onnxruntime int8"] = lambda x: session_int8.run(["logits"], {"input_values": x.numpy()})
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
    if rows:
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device}, "
              f"{torch.get_num_threads()} threads; {flops / 1e9:.0f} GFLOP per clip; best of {args.repeats}")
        print_table(
            [("dtype", 8, "s"), ("batch", 5, "d"), ("implementation", 27, "s"), ("ms/batch", 10, ".1f"),
             ("clips/s", 8, ".2f"), ("x sdpa ref", 10, ".2x"), ("GFLOP/s", 8, ".1f"), ("of matmul", 9, ".0%")],
            [[r["dtype"], r["batch"], r["implementation"], r["ms_per_batch"], r["clips_per_s"],
              r["speedup_vs_transformers_sdpa"], r["gflops"], r["share_of_matmul_peak"]] for r in rows],
        )
        print(f"matmul peak: {', '.join(f'{r}' for r in sorted({round(r['matmul_gflops'], 1) for r in rows}))} GFLOP/s")
    if args.agreement_per_class:
        agreement = agree(tmp, args.agreement_per_class, device, not args.no_int8 and device.type == "cpu",
                          not args.no_onnx)
        print("agreement with float32 PyTorch on labelled real-signal clips (8 classes):")
        for name, values in agreement.items():
            print(f"  {name:31s} {values['clips']} clips  min cosine {values['min_cosine']:.5f}  top-1 agreement "
                  f"{100 * values['top1']:.1f}%  mean |logit diff| {values['mean_abs_logit_diff']:.4f}  "
                  f"smallest float32 top-1 margin {values['min_top1_margin_float32']:.4f}"
                  + (f"  (probe's float32 accuracy {100 * values['float32_probe_accuracy']:.0f}%)"
                     if values["float32_probe_accuracy"] is not None else ""))
        rows.append({"agreement": agreement})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
