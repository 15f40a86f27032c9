# cluster.cmake - gpt-train across an emulated multi-node cluster (issue 13; docs/scaling.md):
# network namespaces as nodes, each on its own tc-shaped link to a bridge, Open MPI over TCP
# (tests/cluster/netns_cluster.sh). Root only: each part skips (77) with the reason elsewhere.
# exact: 4 nodes give 4 local ranks' weights bit for bit; overlap: step time and share hidden
# at 100 and 400 Mbit/s, fp32 and bf16; linkdown: a link cut mid-run, the watchdog, --resume;
# cleanup: nothing left behind. About 2.5 minutes in all.
foreach(part exact overlap linkdown cleanup)
  add_test(NAME cluster_${part}
           COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/cluster/test_cluster.py ${part})
  set_tests_properties(cluster_${part} PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 600
                       SKIP_RETURN_CODE 77 PROCESSORS 2 LABELS cluster)
endforeach()
