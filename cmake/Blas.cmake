# Finds the BLAS used for the GEMM tiles of the core kernels.
#
# Preferred for the Python extension: the OpenBLAS shipped by the PyPI package
# `scipy-openblas32` (the one numpy and scipy build against), located through the Python
# interpreter.  A build without the extension (the installable C/C++ package) never uses
# it, so the installed library does not depend on a site-packages path: it takes a system
# CBLAS (Debian: libopenblas-dev).  Else the core falls back to its own portable blocked GEMM, so the
# library still builds anywhere a C++17 compiler does (only slower).
set(DATACREDIT_BLAS "AUTO" CACHE STRING "BLAS for GEMM tiles: AUTO, scipy-openblas32, cblas or builtin")

# datacredit_link_blas(target [PRIVATE|PUBLIC]): links the chosen BLAS (PUBLIC by default)
# and sets DATACREDIT_BLAS_KIND (scipy-openblas32, cblas or builtin) in the caller's scope.
function(datacredit_link_blas target)
  set(scope PUBLIC)
  if(ARGC GREATER 1)
    set(scope ${ARGV1})
  endif()
  set(choice ${DATACREDIT_BLAS})
  if(choice STREQUAL "scipy-openblas32" OR (choice STREQUAL "AUTO" AND (DATACREDIT_PYTHON OR SKBUILD)))
    if(NOT Python_EXECUTABLE)
      find_package(Python COMPONENTS Interpreter QUIET)
    endif()
    if(Python_EXECUTABLE)
      execute_process(
        COMMAND ${Python_EXECUTABLE} -c "import scipy_openblas32 as s, os; print(s.get_include_dir()); print(os.path.join(s.get_lib_dir(), 'lib' + s.get_library() + '.so'))"
        OUTPUT_VARIABLE _sob RESULT_VARIABLE _sob_rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
      if(_sob_rc EQUAL 0)
        string(REPLACE "\n" ";" _sob "${_sob}")
        list(GET _sob 0 _sob_inc)
        list(GET _sob 1 _sob_lib)
        if(EXISTS ${_sob_lib})
          target_include_directories(${target} PRIVATE ${_sob_inc})
          target_link_libraries(${target} ${scope} ${_sob_lib})
          target_compile_definitions(${target} PRIVATE DATACREDIT_BLAS_SCIPY_OPENBLAS=1)
          get_filename_component(_sob_dir ${_sob_lib} DIRECTORY)
          set(DATACREDIT_BLAS_RPATH ${_sob_dir} PARENT_SCOPE)
          set(DATACREDIT_BLAS_KIND scipy-openblas32 PARENT_SCOPE)
          message(STATUS "datacredit: BLAS = scipy-openblas32 (${_sob_lib})")
          return()
        endif()
      endif()
    endif()
    if(choice STREQUAL "scipy-openblas32")
      message(FATAL_ERROR "DATACREDIT_BLAS=scipy-openblas32 but the Python package scipy-openblas32 was not found")
    endif()
  endif()
  if(choice STREQUAL "AUTO" OR choice STREQUAL "cblas")
    find_package(BLAS QUIET)
    find_path(_cblas_inc cblas.h)
    if(BLAS_FOUND AND _cblas_inc AND TARGET BLAS::BLAS)
      target_include_directories(${target} PRIVATE ${_cblas_inc})
      target_link_libraries(${target} ${scope} BLAS::BLAS)
      set(DATACREDIT_BLAS_KIND cblas PARENT_SCOPE)
      target_compile_definitions(${target} PRIVATE DATACREDIT_BLAS_CBLAS=1)
      message(STATUS "datacredit: BLAS = system CBLAS (${BLAS_LIBRARIES})")
      return()
    endif()
    if(choice STREQUAL "cblas")
      message(FATAL_ERROR "DATACREDIT_BLAS=cblas but no CBLAS was found")
    endif()
  endif()
  set(DATACREDIT_BLAS_KIND builtin PARENT_SCOPE)
  message(STATUS "datacredit: BLAS = builtin portable GEMM (slow; install scipy-openblas32 for speed)")
endfunction()
