# cmake -P run_consumer.cmake -DMODE=<add_subdirectory|find_package|pkg-config>
#   -DCONSUMER_DIR=<consumer source> -DWORK_DIR=<fresh build dir>
#   [-DMOEKIT_SOURCE_DIR=...] [-DPREFIX=<install prefix>] [-DPKGCONFIGDIR=share/pkgconfig]
#   [-DGENERATOR=...] [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DBUILD_TYPE=...]
#   [-DCXX_FLAGS=...] [-DLINKER_FLAGS=...] [-DWARNING_FLAGS=<space separated>]
#   [-DEIGEN_DIR=...] [-DEXPECTED_VERSION=...]
#
# Configures, builds and runs the consumer project in a fresh directory with
# the same toolchain as the moekit build that registered this test.
foreach(var MODE CONSUMER_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(args -S "${CONSUMER_DIR}" -B "${WORK_DIR}" "-DMOEKIT_CONSUMER_MODE=${MODE}")
if(GENERATOR)
  list(APPEND args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
  list(APPEND args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
  list(APPEND args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()
list(APPEND args "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
                 "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
                 "-DCMAKE_EXE_LINKER_FLAGS=${LINKER_FLAGS}"
                 "-DMOEKIT_CONSUMER_WARNING_FLAGS=${WARNING_FLAGS}"
                 "-DMOEKIT_EXPECTED_VERSION=${EXPECTED_VERSION}")
if(EIGEN_DIR)
  list(APPEND args "-DEigen3_DIR=${EIGEN_DIR}")
endif()

if(MODE STREQUAL "add_subdirectory")
  list(APPEND args "-DMOEKIT_SOURCE_DIR=${MOEKIT_SOURCE_DIR}")
elseif(MODE STREQUAL "find_package")
  # Only the install prefix: the source tree must not be needed.
  list(APPEND args "-DCMAKE_PREFIX_PATH=${PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "pkg-config")
  if(NOT PKGCONFIGDIR)
    set(PKGCONFIGDIR share/pkgconfig)
  endif()
  if(DEFINED ENV{PKG_CONFIG_PATH} AND NOT "$ENV{PKG_CONFIG_PATH}" STREQUAL "")
    set(ENV{PKG_CONFIG_PATH} "${PREFIX}/${PKGCONFIGDIR}:$ENV{PKG_CONFIG_PATH}")
  else()
    set(ENV{PKG_CONFIG_PATH} "${PREFIX}/${PKGCONFIGDIR}")
  endif()
endif()

function(step what)
  message(STATUS "consumer (${MODE}): ${what}")
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer (${MODE}): ${what} failed (${rc})")
  endif()
endfunction()

step(configure "${CMAKE_COMMAND}" ${args})
step(build "${CMAKE_COMMAND}" --build "${WORK_DIR}" --config "${BUILD_TYPE}")
step(run "${CMAKE_CTEST_COMMAND}" -C "${BUILD_TYPE}" --output-on-failure --verbose)
