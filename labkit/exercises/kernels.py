"""Self-checks for notebook 03 (sparse kernels): byte math, arithmetic intensity, choosing a format."""
from __future__ import annotations

from labkit.exercises import ExerciseError, expect, passed, unanswered
from labkit.formats import (
    KERNEL_FORMATS as FORMATS,  # the formats with a lab kernel (one registry)
)


def _number(answer: object, exercise: str) -> float:
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        raise ExerciseError(f"{exercise}: expected a number, got {type(answer).__name__}")
    return float(answer)


def check_24_bytes(answer: object) -> bool:
    """Exercise 1: bytes of a 4096 x 4096 fp16 weight in the lab's 2:4 format (values + meta)."""
    ex = "Exercise 1 (2:4 bytes)"
    if unanswered(answer, ex):
        return False
    value = _number(answer, ex)
    n = k = 4096
    right = n * (k // 2) * 2 + n * (k // 8)
    dense = n * k * 2
    expect(value != dense, f"{ex}: {value:.0f} is the dense size (2 bytes for every weight). The format keeps "
                           "only 2 of every 4 values.")
    expect(value != n * (k // 2) * 2, f"{ex}: you counted the kept values ({value:.0f} bytes) but not the "
                                      "metadata: 2 bits of position per kept value, i.e. 4 bits per group of 4.")
    expect(abs(value - right) < 1, f"{ex}: not quite. Per group of 4 weights: 2 values x 2 bytes + 2 indices x "
                                   f"2 bits. There are {n * k // 4} groups.")
    return passed(ex, f"{right} bytes = {right / dense:.4f} of dense: at most {dense / right:.2f}x faster where "
                      "a layer is memory-bound.")


def check_intensity(answer: object) -> bool:
    """Exercise 2: FLOPs per byte of a dense fp16 layer, N = K = 4096, with 16 tokens."""
    ex = "Exercise 2 (arithmetic intensity)"
    if unanswered(answer, ex):
        return False
    value = _number(answer, ex)
    m, n, k, s = 16, 4096, 4096, 2
    flops = 2 * m * n * k
    nbytes = s * (n * k + m * k + m * n)
    right = flops / nbytes

    def near(x: float) -> bool:
        return abs(value - x) < 0.003 * x

    if not near(right):
        expect(not near(flops / (s * n * k)), f"{ex}: close, but count the bytes of x (16 x 4096) and y "
                                              "(16 x 4096) too, not only the weight.")
        expect(not (near(right / 2) or near(flops / (2 * s * n * k))),
               f"{ex}: each multiply-add is 2 FLOPs: FLOPs = 2 x M x N x K.")
        expect(False, f"{ex}: FLOPs = 2*M*N*K; bytes = 2 bytes x (N*K weights + M*K inputs + M*N outputs). Divide.")
    from labkit.roofline import measured_roofs

    roofs = measured_roofs()
    balance = roofs["peak_tflops"] / roofs["bandwidth_tbs"]
    return passed(ex, f"{right:.2f} FLOPs per byte. The H200 measured in benchmarks/results needs about "
                      f"{balance:.0f} to keep its tensor cores busy, so this layer waits on memory: fewer weight "
                      "bytes = faster.")


_CHOICE_HINTS = {
    "bsr": "BSR skips whole zero blocks, but randomly scattered zeros almost never fill a whole 32x32 block.",
    "2:4": "2:4 needs at most 2 nonzeros in every group of 4 inputs; random 70% sparsity does not guarantee that.",
    "csr": "CSR stores 3x the bytes of dense per kept fp16 weight (value + int32 index) and runs without tensor "
           "cores: at 70% sparsity and 1024 tokens it is slower than dense. It needs about 95%.",
}


def check_format_choice(answer: object) -> bool:
    """Exercise 3: 70% *unstructured* sparsity, 1024 tokens, on a GPU: which format should run?"""
    ex = "Exercise 3 (choosing a format)"
    if unanswered(answer, ex):
        return False
    if not (isinstance(answer, str) and answer in FORMATS):
        raise ExerciseError(f"{ex}: answer with one of {FORMATS}")
    expect(answer == "dense", f"{ex}: {_CHOICE_HINTS.get(answer, '')}")
    return passed(ex, "unstructured sparsity below ~95% is fastest as a plain dense matmul; it still saves "
                      "storage once compressed, but not time.")


def check_csr_breakeven(answer: object) -> bool:
    """Exercise 4: below which density does CSR (fp16 values, int32 indices) move fewer bytes than dense?"""
    ex = "Exercise 4 (CSR break-even)"
    if unanswered(answer, ex):
        return False
    value = _number(answer, ex)
    expect(0 < value <= 1, f"{ex}: a density is a fraction between 0 and 1 (0.1 = 10% kept).")
    expect(abs(value - 0.5) > 1e-3, f"{ex}: 0.5 ignores the index: each kept weight costs 2 bytes of value "
                                    "plus 4 bytes of column index.")
    expect(abs(value - 1 / 3) < 0.01, f"{ex}: dense costs 2 bytes per weight; CSR costs 6 per *kept* weight. "
                                      "Solve 6 x d = 2.")
    return passed(ex, "1/3: below 33% density (67% sparsity) CSR reads fewer bytes; and that is only the memory "
                      "side; without tensor cores it needs far more sparsity once compute matters.")
