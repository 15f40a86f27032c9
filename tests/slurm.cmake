# Slurm: the job scripts in jobs/ submitted unchanged to a real throw-away single-host
# cluster (munged + slurmctld + slurmd under a temp dir). Skips (77) only where Slurm cannot
# run: not root, or slurm-wlm/munge not installed (scripts/setup.sh --tests installs them).
add_test(NAME slurm_jobs
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/slurm/test_slurm.sh)
set_tests_properties(slurm_jobs PROPERTIES
  ENVIRONMENT "${GT_TEST_ENV}"
  TIMEOUT 600
  SKIP_RETURN_CODE 77
  PROCESSORS 2
  LABELS "slurm;mpi")
