"""Writer/reader for llmprune's golden files (.lpgd), the format the C++ tests read
through tests/golden.h.

Layout (little-endian throughout):
    magic      8 bytes  b"LLMPGLD\\0"
    version    u32      = 1
    n_entries  u32
    per entry:
        name_len u32, name (utf-8, name_len bytes, no terminator)
        dtype    u8     0 = f32, 1 = i32, 2 = f64
        ndim     u32, dims i64[ndim]   (ndim = 0 is a scalar holding one element)
        data     prod(dims) elements of dtype, row-major (C order)

Entries keep their insertion order; names are unique. Plain numpy only, so the file can
be written and read by any Python with numpy.
"""

import struct

import numpy as np

MAGIC = b"LLMPGLD\0"
VERSION = 1

# dtype code -> numpy little-endian dtype
_CODES = {0: np.dtype("<f4"), 1: np.dtype("<i4"), 2: np.dtype("<f8")}
_BY_NAME = {np.dtype("<f4"): 0, np.dtype("<i4"): 1, np.dtype("<f8"): 2}


def write(path, entries):
    """entries: iterable of (name, numpy array) pairs; array dtype must be float32,
    int32 or float64 (anything else is refused rather than silently converted)."""
    seen = set()
    chunks = []
    for name, arr in entries:
        if name in seen:
            raise ValueError(f"duplicate golden entry {name!r}")
        seen.add(name)
        arr = np.asarray(arr)
        dt = arr.dtype.newbyteorder("<")
        if dt not in _BY_NAME:
            raise TypeError(f"{name}: unsupported dtype {arr.dtype}")
        raw_name = name.encode("utf-8")
        head = struct.pack("<I", len(raw_name)) + raw_name
        head += struct.pack("<BI", _BY_NAME[dt], arr.ndim)
        head += struct.pack(f"<{arr.ndim}q", *arr.shape)
        chunks.append(head + np.ascontiguousarray(arr, dtype=dt).tobytes())
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(chunks)))
        for c in chunks:
            f.write(c)


def read(path):
    """Returns a dict name -> numpy array (insertion order kept)."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != MAGIC:
        raise ValueError(f"{path}: bad magic")
    version, n = struct.unpack_from("<II", buf, 8)
    if version != VERSION:
        raise ValueError(f"{path}: unsupported version {version}")
    off = 16
    out = {}
    for _ in range(n):
        (name_len,) = struct.unpack_from("<I", buf, off)
        off += 4
        name = buf[off:off + name_len].decode("utf-8")
        off += name_len
        code, ndim = struct.unpack_from("<BI", buf, off)
        off += 5
        dims = struct.unpack_from(f"<{ndim}q", buf, off)
        off += 8 * ndim
        dt = _CODES[code]
        count = int(np.prod(dims)) if ndim else 1
        nbytes = count * dt.itemsize
        if off + nbytes > len(buf):
            raise ValueError(f"{path}: truncated in entry {name!r}")
        out[name] = np.frombuffer(buf, dtype=dt, count=count, offset=off).reshape(dims)
        off += nbytes
    if off != len(buf):
        raise ValueError(f"{path}: {len(buf) - off} trailing bytes")
    return out
