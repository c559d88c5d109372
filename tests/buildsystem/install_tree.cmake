# cmake -P install_tree.cmake -DBUILD_DIR=<moekit build> -DPREFIX=<dir> [-DCONFIG=<cfg>]
#   -DSOURCE_DIR=<moekit source> -DINCLUDEDIR=include -DCMAKEDIR=share/cmake/moekit
#   -DPKGCONFIGDIR=share/pkgconfig -DBINDIR=bin
#
# Installs the moekit build tree into a fresh PREFIX, then checks that the
# install holds exactly the public headers and the package files (plus, under
# BINDIR, whatever programs the build installs, e.g. the moekit tool).
foreach(var BUILD_DIR PREFIX SOURCE_DIR INCLUDEDIR CMAKEDIR PKGCONFIGDIR BINDIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_tree.cmake: ${var} is not set")
  endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}")
set(config_args)
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${config_args}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()

# What must be there.
set(expected
  "${CMAKEDIR}/moekitConfig.cmake"
  "${CMAKEDIR}/moekitConfigVersion.cmake"
  "${CMAKEDIR}/moekitTargets.cmake"
  "${PKGCONFIGDIR}/moekit.pc")
file(GLOB_RECURSE source_headers RELATIVE "${SOURCE_DIR}/include"
     "${SOURCE_DIR}/include/moekit/*.hpp" "${SOURCE_DIR}/include/moekit/*.h")
foreach(h IN LISTS source_headers)
  list(APPEND expected "${INCLUDEDIR}/${h}")
endforeach()

file(GLOB_RECURSE installed LIST_DIRECTORIES false RELATIVE "${PREFIX}" "${PREFIX}/*")
set(missing ${expected})
list(REMOVE_ITEM missing ${installed})
set(unexpected ${installed})
list(REMOVE_ITEM unexpected ${expected})
# export() may add per-configuration files: moekitTargets-<config>.cmake.
list(FILTER unexpected EXCLUDE REGEX "^${CMAKEDIR}/moekitTargets-[A-Za-z]*\\.cmake$")
list(FILTER unexpected EXCLUDE REGEX "^${BINDIR}/")
if(missing OR unexpected)
  string(REPLACE ";" "\n  " missing "${missing}")
  string(REPLACE ";" "\n  " unexpected "${unexpected}")
  message(FATAL_ERROR "install tree under ${PREFIX} is wrong.\n"
                      "Missing:\n  ${missing}\nNot expected (only include/moekit, the package files and "
                      "programs in ${BINDIR} belong in an install):\n  ${unexpected}")
endif()
list(LENGTH source_headers n)
message(STATUS "installed ${n} headers and the package files into ${PREFIX}")
