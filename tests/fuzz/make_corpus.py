#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/safetensors/
# (SafetensorsFile: small valid files, valid_*, every dtype, metadata,
# scalars, empty tensors, misaligned tensors, gaps, and small invalid ones,
# invalid_*, one defect each) and tests/fuzz/corpus/trace/ (load_trace: the
# same for routing trace files). Standard library only; the
# output is deterministic, so re-running it changes nothing.
#   python3 tests/fuzz/make_corpus.py
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")
TRACE_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "trace")

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2,
         "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def image(header, data=b"", length=None, pad=True):
    """u64 LE header length + header text (padded with spaces to 8) + data."""
    text = header if isinstance(header, bytes) else header.encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes), stored in name order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in sorted(tensors):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return image(json.dumps(header, separators=(",", ":")), data)


def pattern(n):
    return bytes((i * 37 + 11) & 0xFF for i in range(n))


def main():
    seeds = {}
    f32 = struct.pack("<6f", 1.0, -2.0, 0.5, 3.25, -0.0, 1e-3)
    seeds["valid_f32_matrix"] = safetensors([("w", "F32", [2, 3], f32)], {"format": "pt"})
    seeds["valid_every_dtype"] = safetensors(
        [("t." + d.lower(), d, [2, 2], pattern(4 * s) if d != "BOOL" else bytes([1, 0, 0, 1]))
         for d, s in SIZES.items()], {"k": "v"})
    seeds["valid_bf16_3d"] = safetensors([("experts.w1", "BF16", [2, 3, 4], pattern(48))])
    seeds["valid_scalar_and_empty"] = safetensors(
        [("scalar", "F64", [], pattern(8)), ("empty", "F32", [0, 5], b""), ("zero", "I32", [3, 0], b"")])
    seeds["valid_empty_header"] = image("{}")
    seeds["valid_metadata_only"] = image('{"__metadata__":{"a":"b","c":""}}')
    seeds["valid_misaligned"] = safetensors(
        [("a", "BF16", [3], pattern(6)), ("b", "F32", [2], f32[:8]), ("c", "I64", [1], pattern(8))])
    seeds["valid_gap_and_tail"] = image(
        '{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', pattern(16))
    seeds["valid_ids"] = safetensors([("topk_ids", "I32", [3, 2], struct.pack("<6i", 0, 3, 1, 2, 7, 0)),
                                      ("big", "I64", [2], struct.pack("<2q", 1, 1 << 40))])
    seeds["valid_unknown_field"] = image(
        '{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":{"y":[1]}}}', b"\x01\x02")
    seeds["valid_unicode_names"] = safetensors([("gewicht.ü", "F16", [1], b"\x00\x3c")], {"名": "値"})
    seeds["valid_mixtral_like"] = safetensors(
        [("gate.weight", "F32", [4, 2], pattern(32))] +
        [("experts.%d.w%d.weight" % (e, k), "BF16", [2, 2], pattern(8)) for e in range(2) for k in (1, 2, 3)],
        {"family": "mixtral", "top_k": "2"})

    ok = '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    seeds["invalid_short"] = b"\x08\x00\x00"
    seeds["invalid_header_too_long"] = image("{}", length=1000)
    seeds["invalid_header_huge"] = image("{}", length=1 << 63)
    seeds["invalid_not_json"] = image("not json at all")
    seeds["invalid_nul_in_header"] = image(b"{}\x00{}", pad=False)
    seeds["invalid_array_header"] = image("[1,2,3]")
    seeds["invalid_deep"] = image("[" * 40 + "]" * 40)
    seeds["invalid_duplicate"] = image('{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                       '"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x00")
    seeds["invalid_dtype"] = image(ok.replace("F32", "F33"), pattern(8))
    seeds["invalid_size_mismatch"] = image(ok.replace("[2]", "[3]"), pattern(12))
    seeds["invalid_out_of_range"] = image(ok, pattern(4))
    seeds["invalid_overlap"] = image('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                     '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', pattern(12))
    seeds["invalid_begin_after_end"] = image('{"t":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}', pattern(4))
    seeds["invalid_negative_dim"] = image(ok.replace("[2]", "[-2]"), pattern(8))
    seeds["invalid_shape_overflow"] = image(ok.replace("[2]", "[4294967296,4294967296,4294967296]"), pattern(8))
    seeds["invalid_metadata_value"] = image('{"__metadata__":{"n":5}}')
    seeds["invalid_truncated_data"] = safetensors([("w", "F32", [2, 3], f32)])[:-3]

    write_seeds(OUT, seeds)
    write_seeds(TRACE_OUT, trace_seeds())


def trace(ids, shape, experts="4", extra=(), metadata=None):
    """A routing trace file: topk_ids I32 of `shape` and __metadata__ num_experts."""
    meta = {"num_experts": experts} if metadata is None else metadata
    return safetensors([("topk_ids", "I32", shape, struct.pack("<%di" % len(ids), *ids))] + list(extra),
                       meta)


def trace_seeds():
    seeds = {}
    seeds["valid_small"] = trace([0, 1, 2, 3, -1, 0], [2, 1, 3])
    seeds["valid_two_layers"] = trace([0, 1, 1, 0, 3, 2, 2, 3], [2, 2, 2], "4")
    seeds["valid_no_tokens"] = trace([], [0, 3, 2], "8")
    seeds["valid_extra_tensor_and_metadata"] = trace(
        [5, 6], [1, 1, 2], "7", extra=[("extra", "F32", [1], struct.pack("<f", 1.5))],
        metadata={"format": "pt", "num_experts": "7", "note": "caf\u00e9"})
    seeds["valid_many_experts"] = trace([2147483646, -1], [1, 1, 2], "2147483647")
    seeds["invalid_id_out_of_range"] = trace([4], [1, 1, 1])
    seeds["invalid_id_below_minus_one"] = trace([-2], [1, 1, 1])
    seeds["invalid_no_metadata"] = safetensors([("topk_ids", "I32", [1, 1, 1], struct.pack("<i", 0))])
    seeds["invalid_experts_not_a_number"] = trace([0], [1, 1, 1], "4x")
    seeds["invalid_experts_zero"] = trace([0], [1, 1, 1], "0")
    seeds["invalid_rank_two"] = trace([0, 1], [1, 2])
    seeds["invalid_f32_ids"] = safetensors([("topk_ids", "F32", [1, 1, 1], struct.pack("<f", 0.0))],
                                           {"num_experts": "4"})
    seeds["invalid_no_tokens_huge_layers"] = trace([], [0, 4294967296, 1])
    seeds["invalid_no_ids"] = safetensors([("x", "I32", [1], struct.pack("<i", 0))], {"num_experts": "4"})
    seeds["invalid_truncated"] = trace([0, 1, 2, 3], [1, 1, 4])[:-2]
    seeds["invalid_unterminated_string"] = image('{"__metadata__":{"num_experts":"4')
    seeds["invalid_bad_escape"] = image('{"__metadata__":{"num_experts":"\\q"}}')
    seeds["invalid_deep"] = image("[" * 80 + "]" * 80)
    return seeds


def write_seeds(out, seeds):
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.startswith(("valid_", "invalid_")) and name not in seeds:
            os.remove(os.path.join(out, name))
    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
