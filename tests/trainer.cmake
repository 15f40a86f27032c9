# trainer.cmake - tests of gpt-train (issue 4): gradient averaging, MPI runs at 1-8 ranks,
# exact resume, signals, bad input, and the reference experiment against PyTorch.
add_executable(test_train_grads ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_train_grads.c)
target_link_libraries(test_train_grads PRIVATE gt_train gt_model gt_base)
foreach(np 1 2 4 8)
  add_test(NAME train_grads_np${np}
           COMMAND mpirun --oversubscribe -np ${np} $<TARGET_FILE:test_train_grads>)
  set_tests_properties(train_grads_np${np} PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 120 LABELS trainer)
endforeach()
# The printed effective configuration read back as --config: every value exactly (seeded
# random paths, texts and numbers).
add_executable(test_config_roundtrip ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_config_roundtrip.c)
target_link_libraries(test_config_roundtrip PRIVATE gt_train gt_model gt_base)
add_test(NAME train_config_roundtrip COMMAND $<TARGET_FILE:test_config_roundtrip>)
set_tests_properties(train_config_roundtrip PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 120 LABELS trainer)
foreach(part config ranks resume signals badinput nan text precision)
  add_test(NAME train_mpi_${part}
           COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_train_mpi.py ${part})
  set_tests_properties(train_mpi_${part} PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300
                       SKIP_RETURN_CODE 77 LABELS trainer)
endforeach()
# The reference experiment against the PyTorch twin (~1.5 min; skips without ../shared/data).
add_test(NAME train_reference_vs_pytorch
         COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_train_reference.py)
set_tests_properties(train_reference_vs_pytorch PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300
                     SKIP_RETURN_CODE 77 LABELS trainer)
# The data order is global (issue 15): 8 -> 3 -> 5 -> 8 ranks take exactly the windows of an
# uninterrupted run and cover each once per epoch; 2 x 16 and 4 x 8 sequences give the same
# losses; an older checkpoint's per-rank cursors still resume (~40 s).
add_test(NAME train_data_order COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_data_order.py)
set_tests_properties(train_data_order PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300
                     SKIP_RETURN_CODE 77 LABELS trainer)
# The stall watchdog (mpi/watchdog.c): the adaptive rule, and the one line and exit 2 of a stall.
add_executable(test_watchdog ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_watchdog.c)
target_link_libraries(test_watchdog PRIVATE gt_mpi gt_base)
add_test(NAME train_watchdog COMMAND $<TARGET_FILE:test_watchdog>)
set_tests_properties(train_watchdog PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 60 LABELS trainer)
# --precision bf16 on the reference experiment: 5000 steps on 2 ranks in fp32 and in bf16, val
# loss within 1% (~2.5 min on 2 busy cores; skips without ../shared/data or bf16 instructions).
add_test(NAME train_bf16_quality COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_train_bf16_quality.py)
set_tests_properties(train_bf16_quality PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 900
                     SKIP_RETURN_CODE 77 LABELS trainer)
# The benchmark binary of the exchange's wire formats (docs/scaling.md; not a test).
add_executable(bench_allreduce ${CMAKE_SOURCE_DIR}/bench/bench_allreduce.c)
target_link_libraries(bench_allreduce PRIVATE gt_mpi gt_model gt_base)
set_target_properties(bench_allreduce PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
# --allreduce-dtype bf16 against fp32: 300 steps on 4 ranks, val loss within 1%, weights in sync,
# <= 0.55x the bytes, the flag in /config (~40 s).
add_test(NAME train_allreduce_bf16 COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_allreduce_bf16.py)
set_tests_properties(train_allreduce_bf16 PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 900
                     SKIP_RETURN_CODE 77 LABELS trainer)
# The everyday workflows (issue 14): --init-from (fine-tuning), a text --data of many files,
# gpt-eval (its loss equals the run's val loss, bits per byte by hand, 1 and 2 ranks); ~75 s.
foreach(part initfrom text eval)
  add_test(NAME train_workflows_${part}
           COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/test_workflows.py ${part})
  set_tests_properties(train_workflows_${part} PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 300
                       SKIP_RETURN_CODE 77 LABELS trainer)
endforeach()
