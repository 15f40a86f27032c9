# faults.cmake - "nothing lost": fault injection, corrupted files, fuzzing, sanitizers and
# bad command lines (issue 7). Each test runs the real tools as a user would; all of them skip
# (exit 77, with the reason) when a tool they need is not built. Long versions are scripts:
#   tests/faults/crash_soak.sh    many more kill -9 trials
#   tests/fuzz/run_fuzz.sh        60 s (or --time N) of libFuzzer per harness
#   tests/faults/sanitize.sh      ASan+UBSan build and subset (also run here, see below)
set(GT_FAULTS_DIR ${CMAKE_SOURCE_DIR}/tests/faults)

macro(gt_fault_test name)
  add_test(NAME ${name} COMMAND ${ARGN})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 600
                       SKIP_RETURN_CODE 77 LABELS faults)
endmacro()

# Every flag of gpt-bpe, gpt-train, gpt-sample: missing value, wrong type, out of range,
# unknown name -> exit 1, message names the flag; gpt-train under mpirun -np 2 never hangs.
gt_fault_test(faults_cli_table /usr/bin/python3 ${GT_FAULTS_DIR}/test_cli_table.py)
# --config files (BOM, duplicate keys, directories, FIFOs, devices, size bound, binary, quoting),
# overflowing numbers, --loss-spike and --block-size ranges, UTF-8 text options, and the
# printed effective configuration read back as --config (issue 15).
gt_fault_test(faults_config_file /usr/bin/python3 ${GT_FAULTS_DIR}/test_config_file.py)
# Truncations and seeded byte flips of vocab.h5, tokens.h5, checkpoints and attention.h5,
# loaded by the real tools: success with verified content, or exit 1 and one message.
gt_fault_test(faults_corrupt_files /usr/bin/python3 ${GT_FAULTS_DIR}/test_corrupt_files.py)
# Checksums: checkpoint tensors (ours), tokens.h5/vocab.h5 chunks (HDF5 Fletcher-32): a flipped
# byte in a weight, a moment, the tokens or the merges is refused (exit 1);
# numpy's checksum (io/python/gpt_checkpoint.py) equals C's; edits need update_checksums.
gt_fault_test(faults_checksums /usr/bin/python3 ${GT_FAULTS_DIR}/test_checksums.py)
# kill -9 of a 2-rank training at random moments, then --resume: bit-identical weights.
gt_fault_test(faults_crash_resume /usr/bin/python3 ${GT_FAULTS_DIR}/test_crash_resume.py)
# Full disk (checkpoint and attention writes), a dead rank of 4, NaN / exploding loss.
gt_fault_test(faults_runtime /usr/bin/python3 ${GT_FAULTS_DIR}/test_runtime_faults.py)
# libFuzzer: replay the regression corpus, then 20 s per harness (clang, ASan+UBSan).
gt_fault_test(faults_fuzz_ci ${CMAKE_SOURCE_DIR}/tests/fuzz/run_fuzz.sh --ci)
# Separate ASan+UBSan build (GT_SANITIZE=ON): tokenizer tests with LSan, a 2-rank training.
gt_fault_test(faults_sanitize ${GT_FAULTS_DIR}/sanitize.sh --ci)
# A short 1-rank training under valgrind memcheck: no invalid reads or writes.
gt_fault_test(faults_valgrind ${GT_FAULTS_DIR}/valgrind.sh)
# Writing files when writes fail: a full disk (small tmpfs at several sizes), the file size
# limit (RLIMIT_FSIZE), a failing call at every position (tests/faults/failwrite.c,
# LD_PRELOAD), for gpt-bpe train/encode and gpt-sample --attn-out: exit 2, one message, no
# output file and no temp file, never a crash; or exit 0 with exactly the right content.
add_library(gt_failwrite SHARED ${GT_FAULTS_DIR}/failwrite.c)
target_link_libraries(gt_failwrite PRIVATE dl)
set_target_properties(gt_failwrite PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
gt_fault_test(faults_io /usr/bin/python3 ${GT_FAULTS_DIR}/test_io_faults.py)
# gpt-bpe and gpt-sample given FIFOs, devices, directories and sockets as inputs; SIGINT,
# SIGTERM and SIGHUP in each phase; stdout to /dev/full and a closed pipe; --force onto an
# input; messages naming a lock or a file in place of a directory.
gt_fault_test(faults_tools /usr/bin/python3 ${GT_FAULTS_DIR}/test_tool_faults.py)
# gpt-train's classes of issue 15: two runs on one RUN (RUN/lock), RUN removed after an early
# error, FIFO / device / directory as --data, a resume that would switch vocabularies, the
# printed resume command run by a shell, steps across 99,999,999 and 10^15, the last good
# checkpoint of a diverging --skip-bad-steps run (~40 s).
gt_fault_test(faults_trainer /usr/bin/python3 ${GT_FAULTS_DIR}/test_trainer_faults.py)
# A stalled rank (SIGSTOP of one of 4 ranks, from inside and from outside; rank 0 stuck in its
# checkpoint write): --collective-timeout ends the job, exit 2, one line per live rank naming the
# step, the phase and the missing rank; --resume finishes; the adaptive default's floor.
gt_fault_test(faults_stall /usr/bin/python3 ${GT_FAULTS_DIR}/test_stall.py)
