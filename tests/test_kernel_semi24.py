"""The lab's 2:4 packed format (pack/unpack) and the kernel that reads it, under the interpreter."""
import pytest
import torch

from labkit.kernels import runtime as rt
from labkit.kernels.runtime import CPU_DTYPES, assert_close, reference
from labkit.kernels.semi24 import bytes_per_weight, pack_24, semi24_linear, unpack_24
from labkit.prune import nm_mask

TEST_DEVICE = rt.kernel_device()  # the GPU when compiled kernels run here, else the CPU (interpreter)

# the interpreter converts 1-element arrays in `for` bounds to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def sparse24(n, k, gen, dtype=torch.float32):
    w = torch.randn(n, k, generator=gen)
    return (w * nm_mask(w, 2, 4)).to(dtype)


def test_documented_example():
    values, meta = pack_24(torch.tensor([[0.0, 5, 0, 7, 1, 0, 0, 0]]))
    assert values.tolist() == [[5.0, 7.0, 1.0, 0.0]]
    assert meta.tolist() == [[77]]  # (1 | 3<<2) | (0 | 1<<2) << 4


@pytest.mark.parametrize("n,k", [(1, 8), (5, 16), (33, 72)])
def test_pack_unpack_round_trip(n, k):
    gen = torch.Generator().manual_seed(n + k)
    w = sparse24(n, k, gen)
    w[0, :4] = 0  # a group with no nonzero at all
    w[-1, 4:8] = torch.tensor([0.0, 0, 0, 3])  # a group with one nonzero
    values, meta = pack_24(w)
    assert values.shape == (n, k // 2) and meta.shape == (n, k // 8) and meta.dtype == torch.uint8
    assert torch.equal(unpack_24(values, meta), w)


def test_byte_math():
    assert bytes_per_weight(torch.float16) * 4 == 4.5  # 4.5 B per 4 fp16 weights instead of 8
    values, meta = pack_24(torch.zeros(16, 64, dtype=torch.float16))
    stored = values.numel() * 2 + meta.numel()
    assert stored == 16 * 64 * bytes_per_weight(torch.float16)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("m,n,k,split", [(1, 64, 128, None), (1, 70, 200, 3), (16, 96, 64, None),
                                         (17, 64, 72, None), (70, 130, 136, None)])
def test_kernel_matches_float64(m, n, k, split, dtype):
    gen = torch.Generator().manual_seed(m + n + k)
    w = sparse24(n, k, gen, dtype).to(TEST_DEVICE)
    x = torch.randn(m, k, generator=gen).to(TEST_DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(TEST_DEVICE, dtype)
    values, meta = pack_24(w)
    assert_close(semi24_linear(x, values, meta, b, split_k=split), reference(x, w, b), dtype)


def test_all_zero_weight():
    values, meta = pack_24(torch.zeros(32, 64))
    assert torch.equal(semi24_linear(torch.randn(3, 64), values, meta), torch.zeros(3, 32))


@pytest.mark.skipif(not torch.cuda.is_available() or rt.interpreting(), reason="bf16 is tested on a GPU only")
@pytest.mark.parametrize("m", [1, 16, 300])
def test_bf16_on_gpu(m):
    gen = torch.Generator().manual_seed(m)
    w = sparse24(256, 512, gen, torch.bfloat16).cuda()
    x = torch.randn(m, 512, generator=gen).bfloat16().cuda()
    assert_close(semi24_linear(x, *pack_24(w)), reference(x, w, None), torch.bfloat16)


def test_bad_inputs():
    with pytest.raises(ValueError, match="not 2:4"):
        pack_24(torch.ones(4, 8))
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_24(torch.zeros(4, 12))
    with pytest.raises(TypeError, match="dense"):
        pack_24(torch.zeros(4, 8).to_sparse_csr())
    values, meta = pack_24(torch.zeros(8, 32))
    with pytest.raises(ValueError, match="inner dimensions"):
        semi24_linear(torch.randn(2, 16), values, meta)
    with pytest.raises(TypeError, match="dtype"):
        semi24_linear(torch.randn(2, 32).half(), values, meta)
    with pytest.raises(ValueError, match="contiguous"):
        semi24_linear(torch.randn(32, 2).t(), values, meta)
    with pytest.raises(TypeError, match="uint8"):
        semi24_linear(torch.randn(2, 32), values, meta.to(torch.int32))
    with pytest.raises(ValueError, match="do not fit"):
        semi24_linear(torch.randn(2, 32), values, meta[:, :2].contiguous())
    with pytest.raises(ValueError, match="same device|one device"):
        semi24_linear(torch.randn(2, 32, device="meta"), values, meta)


# ---- metadata checks (issue 11) ------------------------------------------------------------------
from labkit.kernels.semi24 import semi24_linear_reference  # noqa: E402


@pytest.mark.parametrize("fn", [semi24_linear, semi24_linear_reference])
def test_metadata_with_equal_positions_is_refused(fn):
    """Byte 0 says 'both kept values at position 0': the kernel gave 4.0 where the reference gave 6.0."""
    x = torch.ones(1, 8)
    values = torch.tensor([[1.0, 3.0, 0.0, 2.0]])
    meta = torch.tensor([[0]], dtype=torch.uint8)
    with pytest.raises(ValueError, match="meta is not valid 2:4 metadata"):
        fn(x, values, meta)


def test_unpack_checks_metadata_and_pack_output_passes():
    values, meta = pack_24(sparse24(4, 16, torch.Generator().manual_seed(0)))
    bad = meta.clone()
    bad[2, 1] = 0b1111_0100  # high nibble: i0 = 3, i1 = 3
    with pytest.raises(ValueError, match="row 2"):
        unpack_24(values, bad)
    unpack_24(values, meta)  # every pack_24 output is valid


@pytest.mark.parametrize("bad", [True, 1.5, "2", float("nan"), 0])
def test_split_k_is_checked(bad):
    values, meta = pack_24(torch.zeros(8, 32))
    with pytest.raises((TypeError, ValueError), match="split_k"):
        semi24_linear(torch.randn(2, 32), values, meta, split_k=bad)


def test_empty_inputs():
    values, meta = pack_24(torch.zeros(8, 32))
    b = torch.randn(8)
    assert semi24_linear(torch.randn(0, 32), values, meta, b).shape == (0, 8)
    assert torch.equal(semi24_linear(torch.randn(3, 32), values, meta, b), b.expand(3, 8))
    with pytest.raises(TypeError, match="floating"):
        pack_24(torch.zeros(4, 8, dtype=torch.bool))
