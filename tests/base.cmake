# io/h5util.c: damaged files that hang or crash libhdf5 become one error, exit 1.
add_test(NAME h5_damaged_files COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/base/test_h5_damaged.sh)
set_tests_properties(h5_damaged_files PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 120 LABELS base)
# src/base/bf16.h: float32 -> bfloat16 rounding (the gradient exchange's wire format) against PyTorch.
add_executable(bf16_dump ${CMAKE_CURRENT_SOURCE_DIR}/base/bf16_dump.c)
set_target_properties(bf16_dump PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
add_test(NAME bf16_rounding COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/base/test_bf16.py)
set_tests_properties(bf16_rounding PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS base)
# Error messages name source files relative to the repository (-fmacro-prefix-map in
# CMakeLists.txt): no checkout path in the tools' strings.
add_test(NAME base_source_paths COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/base/test_source_paths.py)
set_tests_properties(base_source_paths PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS base)
# The option-table mechanism every tool's command line is built on (src/base/options.h).
add_executable(test_options ${CMAKE_CURRENT_SOURCE_DIR}/base/test_options.c)
target_link_libraries(test_options PRIVATE gt_base)
add_test(NAME base_options COMMAND $<TARGET_FILE:test_options>)
set_tests_properties(base_options PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 60 LABELS base)
