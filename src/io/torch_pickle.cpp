#include "io/torch_pickle.h"

#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "core/error.h"

namespace llmprune {
namespace {

// What a pickle value is. Objects live in one arena and refer to each other by index, so a
// crafted pickle (self-referencing dicts, deep nesting) can neither leak nor recurse.
enum class Kind : uint8_t { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };

enum class Callable : uint8_t { OrderedDict, RebuildTensorV2, RebuildTensor, RebuildParameter, RebuildParameterWithState, StorageType };

struct Obj {
  Kind kind = Kind::None;
  int64_t i = 0;                // Int / Bool value; Callable; storage or tensor index
  std::string s;                // Str / Bytes; BigInt's little-endian bytes; a global's dotted name
  std::vector<uint32_t> items;  // Tuple / List elements; Dict key, value, key, value, ...
};

struct StorageType {
  const char* name;
  size_t element_size;
  bool supported;
  DType dtype;
};

// torch.<X>Storage classes (torch/storage.py); only the first three are computed with.
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", 4, true, DType::F32},        {"HalfStorage", 2, true, DType::F16},
    {"BFloat16Storage", 2, true, DType::BF16},    {"DoubleStorage", 8, false, DType::F32},
    {"LongStorage", 8, false, DType::F32},        {"IntStorage", 4, false, DType::F32},
    {"ShortStorage", 2, false, DType::F32},       {"CharStorage", 1, false, DType::F32},
    {"ByteStorage", 1, false, DType::F32},        {"BoolStorage", 1, false, DType::F32},
    {"ComplexFloatStorage", 8, false, DType::F32}, {"ComplexDoubleStorage", 16, false, DType::F32},
    {"QInt8Storage", 0, false, DType::F32},       {"QUInt8Storage", 0, false, DType::F32},
    {"QInt32Storage", 0, false, DType::F32},      {"QUInt4x2Storage", 0, false, DType::F32},
    {"QUInt2x4Storage", 0, false, DType::F32},
};

class Unpickler {
 public:
  explicit Unpickler(const std::string& file) : file_(file) {}

  // Runs the pickle that starts at data[pos]; returns the position after its STOP opcode.
  size_t run(const uint8_t* data, size_t size, size_t pos);
  const Obj& result() const { return objs_[result_]; }
  const Obj& obj(uint32_t i) const { return objs_[i]; }
  std::vector<TorchStorageRef> storages;
  std::vector<TorchTensorRef> tensors;  // unnamed; named when the result dict is read

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw input_error(file_, "pickle: " + what + " (at byte " + std::to_string(op_pos_) + ")");
  }
  uint32_t make(Obj o) {
    objs_.push_back(std::move(o));
    return uint32_t(objs_.size() - 1);
  }
  uint32_t make(Kind k, int64_t i = 0, std::string s = {}) {
    Obj o;
    o.kind = k;
    o.i = i;
    o.s = std::move(s);
    return make(std::move(o));
  }
  uint32_t pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) fail("stack underflow");
    uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) fail("stack underflow");
    return stack_.back();
  }
  // The items pushed since the last MARK, which is dropped.
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail("no MARK for a mark-terminated opcode");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  const uint8_t* take(size_t n) {
    if (n > size_ - pos_) fail("truncated (an opcode's argument runs past the end)");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t take_le(size_t n) {
    const uint8_t* p = take(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) v |= uint64_t(p[k]) << (8 * k);
    return v;
  }
  std::string take_str(uint64_t n) {
    if (n > size_ - pos_) fail("truncated (a string runs past the end)");
    return std::string(reinterpret_cast<const char*>(take(size_t(n))), size_t(n));
  }
  std::string take_line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) fail("truncated (GLOBAL without a newline)");
    const size_t n = size_t(static_cast<const uint8_t*>(nl) - (data_ + pos_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n + 1;
    return s;
  }
  void push(uint32_t v) { stack_.push_back(v); }
  void push_global(const std::string& module, const std::string& name);
  void reduce();
  void persistent_load();
  uint32_t rebuild_tensor(const std::vector<uint32_t>& args, size_t n_required, const char* fn);
  void memo_put(uint32_t key) { memo_[key] = top(); }
  void memo_get(uint32_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
    push(it->second);
  }
  int64_t as_int(uint32_t v, const char* what) const {
    if (objs_[v].kind != Kind::Int) fail(std::string(what) + " is not an integer");
    return objs_[v].i;
  }

  std::string file_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0, pos_ = 0, op_pos_ = 0;
  std::vector<Obj> objs_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
  std::map<std::string, size_t> storage_by_key_;
  uint32_t result_ = 0;
};

void Unpickler::push_global(const std::string& module, const std::string& name) {
  const std::string dotted = module + "." + name;
  static const std::map<std::string, Callable> kAllowed = {
      {"collections.OrderedDict", Callable::OrderedDict},
      {"torch._utils._rebuild_tensor_v2", Callable::RebuildTensorV2},
      {"torch._utils._rebuild_tensor", Callable::RebuildTensor},
      {"torch._utils._rebuild_parameter", Callable::RebuildParameter},
      {"torch._utils._rebuild_parameter_with_state", Callable::RebuildParameterWithState},
  };
  auto it = kAllowed.find(dotted);
  if (it != kAllowed.end()) return push(make(Kind::Global, int64_t(it->second), dotted));
  if (module == "torch")
    for (size_t k = 0; k < std::size(kStorageTypes); k++)
      if (name == kStorageTypes[k].name) return push(make(Kind::Global, int64_t(Callable::StorageType), dotted));
  throw input_error(file_, "pickle global '" + printable_name(dotted) + "' is not allowed (a tensor state dict names only " +
                               "collections.OrderedDict, torch._utils._rebuild_* and torch.<X>Storage)");
}

uint32_t Unpickler::rebuild_tensor(const std::vector<uint32_t>& args, size_t n_required, const char* fn) {
  if (args.size() < n_required) fail(std::string(fn) + " called with " + std::to_string(args.size()) + " arguments");
  const Obj& st = objs_[args[0]];
  if (st.kind != Kind::Storage) fail(std::string(fn) + ": the first argument is not a storage");
  const int64_t offset = as_int(args[1], "a tensor's storage offset");
  if (offset < 0) fail("negative storage offset");
  const Obj& size = objs_[args[2]];
  const Obj& stride = objs_[args[3]];
  if (size.kind != Kind::Tuple || stride.kind != Kind::Tuple) fail(std::string(fn) + ": size and stride must be tuples");
  if (size.items.size() != stride.items.size()) fail(std::string(fn) + ": size and stride differ in length");
  TorchTensorRef t;
  t.storage = size_t(st.i);
  t.offset = uint64_t(offset);
  for (size_t k = 0; k < size.items.size(); k++) {
    t.shape.push_back(as_int(size.items[k], "a tensor dimension"));
    t.stride.push_back(as_int(stride.items[k], "a tensor stride"));
  }
  tensors.push_back(std::move(t));
  return make(Kind::Tensor, int64_t(tensors.size() - 1));
}

void Unpickler::reduce() {
  const uint32_t args_i = pop(), fn_i = pop();
  const Obj& fn = objs_[fn_i];
  if (fn.kind != Kind::Global) fail("REDUCE of a non-global callable is not allowed");
  const Obj& args = objs_[args_i];
  if (args.kind != Kind::Tuple) fail("REDUCE arguments are not a tuple");
  const std::vector<uint32_t> a = args.items;
  switch (Callable(fn.i)) {
    case Callable::OrderedDict:
      if (!a.empty()) fail("collections.OrderedDict called with arguments is not allowed");
      return push(make(Kind::Dict));
    case Callable::RebuildTensorV2:
      // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() != 6 && a.size() != 7) fail("_rebuild_tensor_v2 called with " + std::to_string(a.size()) + " arguments");
      return push(rebuild_tensor(a, 6, "_rebuild_tensor_v2"));
    case Callable::RebuildTensor:  // (storage, offset, size, stride)
      if (a.size() != 4) fail("_rebuild_tensor called with " + std::to_string(a.size()) + " arguments");
      return push(rebuild_tensor(a, 4, "_rebuild_tensor"));
    case Callable::RebuildParameter:           // (data, requires_grad, backward_hooks)
    case Callable::RebuildParameterWithState:  // (data, requires_grad, backward_hooks, state)
      if (a.size() != (Callable(fn.i) == Callable::RebuildParameter ? 3u : 4u) || objs_[a[0]].kind != Kind::Tensor)
        fail(fn.s + " called without a tensor");
      return push(a[0]);  // a Parameter's data is the tensor itself
    case Callable::StorageType:
      break;
  }
  throw input_error(file_, "pickle global '" + printable_name(fn.s) + "' called through REDUCE is not allowed (storage classes appear only in persistent ids)");
}

void Unpickler::persistent_load() {
  const Obj& pid = objs_[pop()];
  // ('storage', torch.<X>Storage, key, location, numel) and, in the legacy format, a 6th
  // view_metadata that torch >= 1.0 always writes as None.
  if (pid.kind != Kind::Tuple || (pid.items.size() != 5 && pid.items.size() != 6))
    fail("persistent id is not a ('storage', type, key, location, numel) tuple");
  const auto& it = pid.items;
  if (objs_[it[0]].kind != Kind::Str || objs_[it[0]].s != "storage") fail("persistent id of an unknown kind");
  const Obj& type = objs_[it[1]];
  if (type.kind != Kind::Global || Callable(type.i) != Callable::StorageType) fail("persistent id names no storage type");
  if (objs_[it[2]].kind != Kind::Str) fail("storage key is not a string");
  if (objs_[it[3]].kind != Kind::Str) fail("storage location is not a string");
  if (it.size() == 6 && objs_[it[5]].kind != Kind::None) fail("storage views (legacy view_metadata) are not supported");
  const std::string& key = objs_[it[2]].s;
  const int64_t numel = as_int(it[4], "a storage's element count");
  if (numel < 0) fail("storage '" + printable_name(key) + "' has a negative size");
  auto found = storage_by_key_.find(key);
  if (found != storage_by_key_.end()) {
    const TorchStorageRef& s = storages[found->second];
    if (s.type_name != type.s || s.numel != uint64_t(numel))
      fail("storage '" + printable_name(key) + "' is declared twice with different types or sizes");
    return push(make(Kind::Storage, int64_t(found->second)));
  }
  TorchStorageRef s;
  s.key = key;
  s.type_name = type.s;
  s.numel = uint64_t(numel);
  for (auto& st : kStorageTypes)
    if (type.s == std::string("torch.") + st.name) {
      s.supported = st.supported;
      s.dtype = st.dtype;
      s.element_size = st.element_size;
    }
  storages.push_back(std::move(s));
  storage_by_key_[key] = storages.size() - 1;
  push(make(Kind::Storage, int64_t(storages.size() - 1)));
}

size_t Unpickler::run(const uint8_t* data, size_t size, size_t pos) {
  data_ = data;
  size_ = size;
  pos_ = pos;
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= size_) fail("truncated (no STOP opcode)");
    const uint8_t op = data_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        const uint64_t v = take_le(1);
        if (v > 5) fail("pickle protocol " + std::to_string(v) + " is not supported");
        break;
      }
      case 0x95: take(8); break;  // FRAME (a length hint only)
      case '.': {                 // STOP
        if (stack_.size() != 1 || !marks_.empty()) fail("STOP with " + std::to_string(stack_.size()) + " values on the stack");
        result_ = stack_.back();
        return pos_;
      }
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0': pop(); break;                            // POP
      case 'N': push(make(Kind::None)); break;
      case 0x88: push(make(Kind::Bool, 1)); break;  // NEWTRUE
      case 0x89: push(make(Kind::Bool, 0)); break;  // NEWFALSE
      case 'J': push(make(Kind::Int, int64_t(int32_t(uint32_t(take_le(4)))))); break;  // BININT
      case 'K': push(make(Kind::Int, int64_t(take_le(1)))); break;                     // BININT1
      case 'M': push(make(Kind::Int, int64_t(take_le(2)))); break;                     // BININT2
      case 0x8a: {  // LONG1: n bytes, little-endian two's complement
        const size_t n = size_t(take_le(1));
        const uint8_t* p = take(n);
        if (n <= 8) {
          uint64_t v = 0;
          for (size_t k = 0; k < n; k++) v |= uint64_t(p[k]) << (8 * k);
          if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          push(make(Kind::Int, int64_t(v)));
        } else {
          push(make(Kind::BigInt, 0, std::string(reinterpret_cast<const char*>(p), n)));
        }
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int k = 0; k < 8; k++) bits = bits << 8 | p[k];
        Obj o;
        o.kind = Kind::Float;
        std::memcpy(&o.i, &bits, 8);
        push(make(std::move(o)));
        break;
      }
      case 'X': push(make(Kind::Str, 0, take_str(take_le(4)))); break;     // BINUNICODE
      case 0x8c: push(make(Kind::Str, 0, take_str(take_le(1)))); break;   // SHORT_BINUNICODE
      case 0x8d: push(make(Kind::Str, 0, take_str(take_le(8)))); break;   // BINUNICODE8
      case 'U': push(make(Kind::Str, 0, take_str(take_le(1)))); break;    // SHORT_BINSTRING (python 2 str)
      case 'T': {                                                         // BINSTRING
        const int32_t n = int32_t(uint32_t(take_le(4)));
        if (n < 0) fail("negative string length");
        push(make(Kind::Str, 0, take_str(uint64_t(n))));
        break;
      }
      case 'C': push(make(Kind::Bytes, 0, take_str(take_le(1)))); break;  // SHORT_BINBYTES
      case 'B': push(make(Kind::Bytes, 0, take_str(take_le(4)))); break;  // BINBYTES
      case ')': push(make(Kind::Tuple)); break;                           // EMPTY_TUPLE
      case ']': push(make(Kind::List)); break;                            // EMPTY_LIST
      case '}': push(make(Kind::Dict)); break;                            // EMPTY_DICT
      case 't': case 'l': case 'd': {                                     // TUPLE, LIST, DICT
        Obj o;
        o.kind = op == 't' ? Kind::Tuple : op == 'l' ? Kind::List : Kind::Dict;
        o.items = pop_mark();
        if (op == 'd' && o.items.size() % 2) fail("DICT with an odd number of items");
        push(make(std::move(o)));
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
        Obj o;
        o.kind = Kind::Tuple;
        o.items.resize(size_t(op - 0x84));
        for (size_t k = o.items.size(); k-- > 0;) o.items[k] = pop();
        push(make(std::move(o)));
        break;
      }
      case 'a': {  // APPEND
        const uint32_t v = pop();
        if (objs_[top()].kind != Kind::List) fail("APPEND to a non-list");
        objs_[top()].items.push_back(v);
        break;
      }
      case 'e': {  // APPENDS
        std::vector<uint32_t> items = pop_mark();
        if (objs_[top()].kind != Kind::List) fail("APPENDS to a non-list");
        auto& dst = objs_[top()].items;
        dst.insert(dst.end(), items.begin(), items.end());
        break;
      }
      case 's': {  // SETITEM
        const uint32_t v = pop(), k = pop();
        if (objs_[top()].kind != Kind::Dict) fail("SETITEM on a non-dict");
        objs_[top()].items.insert(objs_[top()].items.end(), {k, v});
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<uint32_t> items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        if (objs_[top()].kind != Kind::Dict) fail("SETITEMS on a non-dict");
        auto& dst = objs_[top()].items;
        dst.insert(dst.end(), items.begin(), items.end());
        break;
      }
      case 'q': memo_put(uint32_t(take_le(1))); break;  // BINPUT
      case 'r': memo_put(uint32_t(take_le(4))); break;  // LONG_BINPUT
      case 0x94: memo_put(uint32_t(memo_.size())); break;  // MEMOIZE
      case 'h': memo_get(uint32_t(take_le(1))); break;  // BINGET
      case 'j': memo_get(uint32_t(take_le(4))); break;  // LONG_BINGET
      case 'c': {                                       // GLOBAL "module\nname\n"
        std::string module = take_line();
        std::string name = take_line();
        push_global(module, name);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop(), module = pop();
        if (objs_[module].kind != Kind::Str || objs_[name].kind != Kind::Str) fail("STACK_GLOBAL of non-strings");
        push_global(std::string(objs_[module].s), std::string(objs_[name].s));  // copies: push_global grows objs_
        break;
      }
      case 'R': reduce(); break;
      case 'Q': persistent_load(); break;  // BINPERSID
      case 'b': {                          // BUILD: the state of an OrderedDict (its _metadata) or a tensor
        pop();
        const Kind k = objs_[top()].kind;
        if (k != Kind::Dict && k != Kind::Tensor) fail("BUILD of something other than a dict or tensor");
        break;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("opcode ") + hex + " is not allowed in a tensor state dict");
      }
    }
  }
}

TorchStateDict read_state_dict(Unpickler& u, const std::string& file) {
  const Obj& root = u.result();
  if (root.kind != Kind::Dict) throw input_error(file, "pickle: the checkpoint is not a state dict (a dict of name -> tensor)");
  TorchStateDict out;
  out.storages = u.storages;
  std::set<std::string> names;
  for (size_t k = 0; k + 1 < root.items.size(); k += 2) {
    const Obj& key = u.obj(root.items[k]);
    const Obj& val = u.obj(root.items[k + 1]);
    if (key.kind != Kind::Str) throw input_error(file, "pickle: a state dict key is not a string");
    if (val.kind != Kind::Tensor)
      throw input_error(file, "pickle: entry '" + printable_name(key.s) + "' is not a tensor (nested checkpoints are not supported: save model.state_dict())");
    if (!names.insert(key.s).second) throw input_error(file, "pickle: tensor '" + printable_name(key.s) + "' appears twice");
    TorchTensorRef t = u.tensors[size_t(val.i)];
    t.name = key.s;
    out.tensors.push_back(std::move(t));
  }
  return out;
}

}  // namespace

TorchStateDict parse_torch_pickle(const uint8_t* data, size_t size, const std::string& file) {
  Unpickler u(file);
  const size_t end = u.run(data, size, 0);
  if (end != size) throw input_error(file, "pickle: " + std::to_string(size - end) + " bytes follow the STOP opcode");
  return read_state_dict(u, file);
}

TorchLegacyLayout parse_torch_legacy(const uint8_t* data, size_t size, const std::string& file) {
  size_t pos = 0;
  {
    Unpickler magic(file);
    pos = magic.run(data, size, pos);
    static const uint8_t kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};  // 0x1950a86a20f9469cfc6c
    const Obj& m = magic.result();
    if (m.kind != Kind::BigInt || m.s.size() != sizeof kMagic || std::memcmp(m.s.data(), kMagic, sizeof kMagic) != 0)
      throw input_error(file, "not a PyTorch checkpoint (neither a zip archive nor the legacy format's magic number)");
  }
  {
    Unpickler version(file);
    pos = version.run(data, size, pos);
    if (version.result().kind != Kind::Int || version.result().i != 1001)
      throw input_error(file, "legacy format: protocol version is not 1001");
  }
  {
    Unpickler info(file);
    pos = info.run(data, size, pos);
    const Obj& d = info.result();
    bool little = false;
    if (d.kind == Kind::Dict)
      for (size_t k = 0; k + 1 < d.items.size(); k += 2)
        if (info.obj(d.items[k]).kind == Kind::Str && info.obj(d.items[k]).s == "little_endian")
          little = info.obj(d.items[k + 1]).kind == Kind::Bool && info.obj(d.items[k + 1]).i == 1;
    if (!little) throw input_error(file, "legacy format: sys_info does not say little_endian (big-endian checkpoints are not supported)");
  }
  TorchLegacyLayout out;
  {
    Unpickler main(file);
    pos = main.run(data, size, pos);
    out.dict = read_state_dict(main, file);
  }
  Unpickler keys(file);
  pos = keys.run(data, size, pos);
  const Obj& list = keys.result();
  if (list.kind != Kind::List) throw input_error(file, "legacy format: the storage key list is not a list");
  for (uint32_t k : list.items) {
    if (keys.obj(k).kind != Kind::Str) throw input_error(file, "legacy format: a storage key is not a string");
    out.storage_order.push_back(keys.obj(k).s);
  }
  out.data_offset = pos;
  return out;
}

}  // namespace llmprune
