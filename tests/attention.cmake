# Tests of the sampler and attention component (io/attention_io.c, io/generation_io.c,
# src/sampler.c, src/sample_main.c, io/python/gpt_viz.py). See tests/test_attn_*.py and
# tests/test_sample_*.
add_executable(attn_write_check ${CMAKE_CURRENT_SOURCE_DIR}/attention/attn_write_check.c)
target_link_libraries(attn_write_check PRIVATE gt_train)  # the loop's probe_forward
set_target_properties(attn_write_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
add_executable(attn_kvcache_check ${CMAKE_CURRENT_SOURCE_DIR}/attention/attn_kvcache_check.c)
target_link_libraries(attn_kvcache_check PRIVATE gt_sample)

# the key/value cache equals the full forward; sampler (greedy, top-k, top-p, seeds)
add_test(NAME attn_kvcache COMMAND attn_kvcache_check)
# attention.h5: layout, float16, resume truncation, crash, SWMR reader while writing
add_test(NAME attn_writer COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_attn_writer.py)
# readers and heatmaps: plotted matrices equal the file, PNGs decode at the right size
add_test(NAME attn_viz COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_attn_viz.py)
set_tests_properties(attn_kvcache attn_writer attn_viz PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300
                     LABELS attention)
# gpt-sample end to end (needs gpt-train for its fixture; torch for the reference twin)
add_test(NAME sample_cli COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_sample_cli.py)
# gpt-train --attn-every under mpirun: SWMR while training, resume, twin equality, gpt_viz
add_test(NAME attn_train COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_attn_train.py)
set_tests_properties(sample_cli attn_train PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300
                     SKIP_RETURN_CODE 77 LABELS attention)
# benchmark binary (bench/bench_sample.py runs it; not a test)
add_executable(bench_attn_cost ${CMAKE_SOURCE_DIR}/bench/bench_attn_cost.c)
target_link_libraries(bench_attn_cost PRIVATE gt_train)
set_target_properties(bench_attn_cost PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
# gpt_viz.py --html/--serve without a browser: quantization, page data, 25 MB budget, bad input, server
add_test(NAME viz_explorer COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_viz_explorer.py)
set_tests_properties(viz_explorer PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS attention)
