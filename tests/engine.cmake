# Engine tests: C kernels by finite differences, the model against its PyTorch twin,
# checkpoints into PyTorch with strict=True, bad input.
add_executable(engine_check ${CMAKE_CURRENT_SOURCE_DIR}/engine/engine_check.c)
target_link_libraries(engine_check gt_model)
set_target_properties(engine_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
add_executable(test_layers ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_layers.c)
target_link_libraries(test_layers gt_model)
add_test(NAME engine_layers COMMAND test_layers)
add_executable(test_gemm_small ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_gemm_small.c)
target_link_libraries(test_gemm_small gt_model)
add_test(NAME engine_gemm_small COMMAND test_gemm_small)
set_tests_properties(engine_gemm_small PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine
                     SKIP_RETURN_CODE 77)
add_test(NAME engine_torch COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_engine_torch.py)
set_tests_properties(engine_layers engine_torch PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine)
add_executable(test_engine ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_engine.c)
target_link_libraries(test_engine gt_model)
add_test(NAME engine_model COMMAND test_engine)
set_tests_properties(engine_model PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine)
add_test(NAME engine_badinput COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_engine_badinput.py)
set_tests_properties(engine_badinput PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine)
# The benchmark binary (bench/bench_engine.py drives it; not a test).
add_executable(bench_engine ${CMAKE_SOURCE_DIR}/bench/bench_engine.c)
target_link_libraries(bench_engine gt_model)
set_target_properties(bench_engine PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
# bf16 (--precision bf16): rounding, and the oneDNN matmul against exact products (skips,
# saying why, on a CPU without bf16 instructions)
add_executable(test_gemm_bf16 ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_gemm_bf16.c)
target_link_libraries(test_gemm_bf16 gt_model)
add_test(NAME engine_gemm_bf16 COMMAND test_gemm_bf16)
set_tests_properties(engine_gemm_bf16 PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine
                     SKIP_RETURN_CODE 77)
# --precision bf16 of the whole engine: gradients against fp32 within the derived bound, 1 vs 2
# threads, 10 AdamW steps against PyTorch's autocast, resume (skips without bf16 instructions)
add_test(NAME engine_bf16 COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_engine_bf16.py)
set_tests_properties(engine_bf16 PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine SKIP_RETURN_CODE 77)
# nanoGPT interop (io/python/gpt_checkpoint.py): load_into upstream-style models on the mask
# layouts of torch < 2.0 and >= 2.0; from-nanogpt of a train.py checkpoint, then --resume and
# gpt-sample; bad input. Skips (77) without torch.
add_test(NAME engine_nanogpt COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/engine/test_nanogpt_interop.py)
set_tests_properties(engine_nanogpt PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS engine SKIP_RETURN_CODE 77)
