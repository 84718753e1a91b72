// Runs one TVM Relax library (a halocut part) with the TVM runtime alone: no Python, so that an aarch64
// build of this file, linked with the aarch64 libtvm_runtime.so and libtvm_ffi.so of the apache-tvm wheels,
// executes an aarch64 part under qemu-aarch64 on an x86-64 machine (halocut.backends.qemu builds and runs it).
//
//   tvm_runner LIBRARY INPUTS.txt OUT_DIR REPEATS
//
// INPUTS.txt has one line per input of the part's main function, in order:
//   PATH CODE BITS NDIM D0 D1 ...        (CODE: DLPack type code, 0 int, 1 uint, 2 float; PATH: raw bytes)
// The outputs go to OUT_DIR/<i>.bin with OUT_DIR/outputs.txt in the same format (PATH is the file name).
// Each of REPEATS runs prints "run_ms <milliseconds>" (wall time of the emulated run).
#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct CPUAlloc {
  void AllocData(DLTensor* tensor) { tensor->data = std::aligned_alloc(64, Rounded(ffi::GetDataSize(*tensor))); }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
  static size_t Rounded(size_t size) { return (size + 63) / 64 * 64 + 64; }
};

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "tvm_runner: " << message << std::endl;
  std::exit(2);
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot read " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

ffi::Tensor ReadInput(const std::string& line) {
  std::istringstream fields(line);
  std::string path;
  int code, bits, ndim;
  if (!(fields >> path >> code >> bits >> ndim)) Fail("bad input line: " + line);
  std::vector<int64_t> shape(ndim);
  for (auto& dim : shape) fields >> dim;
  DLDataType dtype{static_cast<uint8_t>(code), static_cast<uint8_t>(bits), 1};
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape), dtype, DLDevice{kDLCPU, 0});
  std::vector<char> data = ReadFile(path);
  if (data.size() != ffi::GetDataSize(tensor)) Fail(path + ": size does not match its shape");
  std::memcpy(tensor.GetDLTensorPtr()->data, data.data(), data.size());
  return tensor;
}

void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto tensor = value.as<ffi::Tensor>()) {
    out->push_back(*tensor);
  } else if (auto array = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *array) Flatten(item, out);
  } else {
    Fail("the part's main returned something that is neither a tensor nor a tuple of tensors");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) Fail("usage: tvm_runner LIBRARY INPUTS.txt OUT_DIR REPEATS");
  const std::string out_dir = argv[3];
  const int repeats = std::atoi(argv[4]);
  std::vector<ffi::Any> inputs;
  {
    std::ifstream list(argv[2]);
    if (!list) Fail(std::string("cannot read ") + argv[2]);
    for (std::string line; std::getline(list, line);) {
      if (!line.empty()) inputs.push_back(ReadInput(line));
    }
  }
  ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
  ffi::Module machine = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  // one CPU device with the pooled allocator (2), as relax.VirtualMachine(lib, tvm.cpu()) sets it up
  machine->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
  ffi::Function main_function = machine->GetFunction("main").value();
  std::vector<ffi::AnyView> views(inputs.begin(), inputs.end());
  ffi::Any result;
  for (int run = 0; run < std::max(1, repeats); ++run) {
    auto start = std::chrono::steady_clock::now();
    main_function.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
    std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    std::printf("run_ms %.3f\n", took.count());
  }
  std::vector<ffi::Tensor> outputs;
  Flatten(result, &outputs);
  std::ofstream listing(out_dir + "/outputs.txt");
  for (size_t i = 0; i < outputs.size(); ++i) {
    const DLTensor* tensor = outputs[i].GetDLTensorPtr();
    std::string name = std::to_string(i) + ".bin";
    std::ofstream(out_dir + "/" + name, std::ios::binary)
        .write(static_cast<const char*>(tensor->data) + tensor->byte_offset, ffi::GetDataSize(*tensor));
    listing << name << ' ' << int(tensor->dtype.code) << ' ' << int(tensor->dtype.bits) << ' ' << tensor->ndim;
    for (int d = 0; d < tensor->ndim; ++d) listing << ' ' << tensor->shape[d];
    listing << '\n';
  }
  return 0;
}
