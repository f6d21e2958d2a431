"""The paper's accounting on hand-computed cases, and the buffer's share of it."""

import torch

from revrnn_cli.engine.buffer import HEAD_BITS, InformationBuffer
from revrnn_cli.memory.accounting import memory_ratios, normal_bits


def test_normal_bits_hand_computed():
    # 2 LSTM layers of 650 units, T=70, B=20: 32 bits x 70 x 20 x 650 x 2 (h and c) x 2 layers
    assert normal_bits([650, 650], 70, 20, lstm=True) == 116_480_000
    # GRU: only h; a 1150-wide and a 650-wide layer, T=35, B=10: 32*35*10*(1150+650)
    assert normal_bits([1150, 650], 35, 10, lstm=False) == 20_160_000


def test_ratios_hand_computed():
    r = memory_ratios({"normal_bits": 1000, "used_bits": 50, "optimal_bits": 40})
    assert r == {"ratio_used": 20.0, "ratio_optimal": 25.0, "used_over_optimal": 1.25}
    assert memory_ratios({"normal_bits": 1000, "used_bits": 0}) == {}
    assert "ratio_optimal" not in memory_ratios({"normal_bits": 10, "used_bits": 5})


def test_buffer_used_bits_hand_computed():
    # one unit, Z = 256 (z = 1/4, 2 bits forgotten) four times: 8 bits of stack after 4 steps in
    # total, plus the 18-bit head; optimal = 4 x -log2(1/4) = 8 bits.
    buf = InformationBuffer((1, 1), max_forget_bits=3)
    h = torch.tensor([[123456]], dtype=torch.int32)
    Z = torch.tensor([[256]], dtype=torch.int32)
    z = torch.tensor([[0.25]])
    for _ in range(4):
        h = buf.mul(h, Z, z)
    assert buf.optimal_bits == 8.0
    # the head starts at 2^10 and gains 2 bits per multiplication: 2^12, 2^14, 2^16 (plus low
    # digits). Before the 4th, head >= 256 * Z = 2^16, so exactly one byte spills to the stack.
    assert buf.stored_bytes == 1
    assert buf.used_bits == 8 * 1 + HEAD_BITS == 26
