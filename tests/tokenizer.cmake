# Tokenizer (gpt-bpe) tests: against the Python reference merge for merge and id for id,
# the split chunk for chunk, bad input, SHA-256 and streaming.
add_executable(test_bpe_split ${CMAKE_SOURCE_DIR}/tests/test_bpe_split.c)
target_link_libraries(test_bpe_split gt_tok)
set_target_properties(test_bpe_split PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
add_test(NAME bpe_reference COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_bpe_ref.py full)
add_test(NAME bpe_errors COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_bpe_errors.py)
add_test(NAME bpe_misc COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_bpe_misc.py)
set_tests_properties(bpe_reference bpe_errors bpe_misc PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS tokenizer)
