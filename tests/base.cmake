# io/h5util.c: damaged files that hang or crash libhdf5 become one error, exit 1.
add_test(NAME h5_damaged_files COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/base/test_h5_damaged.sh)
set_tests_properties(h5_damaged_files PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 120 LABELS base)
