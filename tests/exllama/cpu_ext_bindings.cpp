// Python bindings for the CPU half of exllamav2's extension, for promptwire's CPU test tier.
//
// exllamav2 0.3.2 ships its sampling code (cpp/sampling*.cpp, ext_sampling.cpp) and its stop-string
// matcher (cpp/generator.cpp) as plain C++ that runs on the CPU even on a GPU machine. Its own
// binding file (ext_bindings.cpp) also binds every CUDA kernel, so it cannot be built without CUDA;
// this file binds only the CPU functions, under exllamav2's names. The sources themselves are
// compiled unchanged from the installed exllamav2 package (see tests/exllama/cpu_ext.py).

#include <torch/extension.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ext_sampling.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("apply_rep_penalty", &apply_rep_penalty, "apply_rep_penalty");
    m.def("sample_basic", &sample_basic, "sample_basic");
    m.def("logit_filter_exclusive", &logit_filter_exclusive, "logit_filter_exclusive");
    m.def("fast_fill_cpu_ones_bool", &fast_fill_cpu_ones_bool, "fast_fill_cpu_ones_bool");
    m.def("fast_fadd_cpu", &fast_fadd_cpu, "fast_fadd_cpu");
    m.def("fast_copy_cpu", &fast_copy_cpu, "fast_copy_cpu");
    m.def("dump_profile_results", &dump_profile_results, "dump_profile_results");
    m.def("partial_strings_match", &partial_strings_match, "partial_strings_match");
}
