# Tokenizer (gpt-bpe) tests: against the Python reference merge for merge and id for id,
# the split chunk for chunk, bad input, SHA-256 and streaming.
add_executable(test_bpe_split ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_bpe_split.c)
target_link_libraries(test_bpe_split gt_bpe)
set_target_properties(test_bpe_split PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
add_test(NAME bpe_reference COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_bpe_ref.py full)
add_test(NAME bpe_errors COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_bpe_errors.py)
add_test(NAME bpe_misc COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_bpe_misc.py)
set_tests_properties(bpe_reference bpe_errors bpe_misc PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS tokenizer)
# The library API as gpt-train and gpt-sample use it (C).
add_executable(test_bpe_lib ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_bpe_lib.c)
target_link_libraries(test_bpe_lib gt_bpe)
if(EXISTS ${CMAKE_SOURCE_DIR}/../shared/data/tinyshakespeare.txt)
  set(GT_BPE_TEXT ${CMAKE_SOURCE_DIR}/../shared/data/tinyshakespeare.txt)
else()
  set(GT_BPE_TEXT /usr/share/games/fortunes/cookie)  # Debian fortunes (245 kB), a build dependency
endif()
add_test(NAME bpe_library COMMAND test_bpe_lib ${GT_BPE_TEXT} ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(bpe_library PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS tokenizer)
# A corpus of many files: directories, stdin, --doc-separator, --val-split docs, /sources, and
# their bad inputs (~5 s).
add_test(NAME bpe_corpus COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_bpe_corpus.py)
set_tests_properties(bpe_corpus PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300 LABELS tokenizer)
