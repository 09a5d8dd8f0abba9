# SPDX-License-Identifier: MIT
# pkm_add_library(): one libpkmcom-family library, built static and shared from one object library,
# installed with its pkg-config file and exported into the CMake package (pkmcom::NAME).
#
# pkm_add_library(NAME <name> SOURCES <files...> [OUTPUT <file name>] [EXPORT <export name>]
#                 [COMPONENT <install component of the shared object>] [DEPENDS <pkm libraries...>]
#                 [LINK <targets...>] [DEFINES <macros...>]
#                 [PC_DESCRIPTION <text>] [PC_REQUIRES <mods...>] [PC_REQUIRES_PRIVATE <mods...>]
#                 [PC_LIBS_PRIVATE <flags...>])
# makes the targets <name>_static and <name>_shared (both lib<OUTPUT>.*, OUTPUT defaulting to NAME;
# aliases pkmcom::<EXPORT>_static and pkmcom::<EXPORT>, EXPORT defaulting to NAME), exported under
# those names, with the pkg-config file <OUTPUT>.pc. DEPENDS: libraries made by an earlier call
# (the static one links their static one, the shared one their shared one; PUBLIC, since this
# library's headers and users stand on them). LINK: what the library links (PUBLIC for the static
# one, whose users need it; PRIVATE for the shared one, whose public headers need none of it).
# DEFINES: compile definitions of the library's own sources. COMPONENT: defaults to "lib". The shared library exports only the pkm_ symbols (hidden visibility
# plus the version script cmake/libpkmcom.map), with VERSION and SOVERSION of the project.
# Install components: "lib" (the shared object), "dev" (static library, .so link, .pc, headers are
# installed by the caller). The second library, libpkmcom-server, is one more call (CMakeLists.txt).

include(CMakeParseArguments)
include(CheckLinkerFlag)
set(PKM_VERSION_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/libpkmcom.map)
check_linker_flag(C "-Wl,--version-script=${PKM_VERSION_SCRIPT}" PKM_HAVE_VERSION_SCRIPT)

function(pkm_add_library)
  cmake_parse_arguments(A "" "NAME;OUTPUT;EXPORT;COMPONENT;PC_DESCRIPTION"
                        "SOURCES;DEPENDS;LINK;DEFINES;PC_REQUIRES;PC_REQUIRES_PRIVATE;PC_LIBS_PRIVATE"
                        ${ARGN})
  set(n ${A_NAME})
  foreach(v OUTPUT EXPORT)
    if(NOT A_${v})
      set(A_${v} ${n})
    endif()
  endforeach()
  if(NOT A_COMPONENT)
    set(A_COMPONENT lib)
  endif()
  set(dep_static)
  set(dep_shared)
  foreach(d ${A_DEPENDS})
    list(APPEND dep_static ${d}_static)
    list(APPEND dep_shared ${d}_shared)
  endforeach()
  add_library(${n}_obj OBJECT ${A_SOURCES})
  set_target_properties(${n}_obj PROPERTIES POSITION_INDEPENDENT_CODE ON C_VISIBILITY_PRESET hidden)
  target_include_directories(${n}_obj PUBLIC ${PROJECT_SOURCE_DIR}/include
                                      PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${n}_obj PRIVATE ${PKM_WARNINGS})
  target_compile_definitions(${n}_obj PRIVATE PKM_BUILDING_LIBRARY ${A_DEFINES})
  target_link_libraries(${n}_obj PUBLIC ${A_LINK})
  foreach(d ${A_DEPENDS})  # their include directories and usage requirements, not their objects
    target_include_directories(${n}_obj PRIVATE $<TARGET_PROPERTY:${d}_obj,INTERFACE_INCLUDE_DIRECTORIES>)
  endforeach()

  add_library(${n}_static STATIC $<TARGET_OBJECTS:${n}_obj>)
  add_library(${n}_shared SHARED $<TARGET_OBJECTS:${n}_obj>)
  target_link_libraries(${n}_static PUBLIC ${dep_static} ${A_LINK})
  target_link_libraries(${n}_shared PUBLIC ${dep_shared} PRIVATE ${A_LINK})
  set_target_properties(${n}_static PROPERTIES OUTPUT_NAME ${A_OUTPUT} EXPORT_NAME ${A_EXPORT}_static)
  set_target_properties(${n}_shared PROPERTIES OUTPUT_NAME ${A_OUTPUT} EXPORT_NAME ${A_EXPORT}
                        VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
  foreach(t ${n}_static ${n}_shared)
    target_include_directories(${t} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endforeach()
  # Sanitizer and fuzzer builds keep their runtime's symbols out of the version script's way.
  if(PKM_HAVE_VERSION_SCRIPT AND NOT PKM_SANITIZE AND NOT PKM_FUZZ)
    target_link_options(${n}_shared PRIVATE "-Wl,--version-script=${PKM_VERSION_SCRIPT}")
    set_target_properties(${n}_shared PROPERTIES LINK_DEPENDS ${PKM_VERSION_SCRIPT})
  endif()
  add_library(pkmcom::${A_EXPORT} ALIAS ${n}_shared)
  add_library(pkmcom::${A_EXPORT}_static ALIAS ${n}_static)

  install(TARGETS ${n}_shared EXPORT pkmcomTargets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT ${A_COMPONENT} NAMELINK_COMPONENT dev)
  install(TARGETS ${n}_static EXPORT pkmcomTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

  # lib<name>.pc: absolute paths, worked out when installing, so that they are right for the
  # prefix actually installed to (cmake --install --prefix, CPack's /usr) and for any libdir,
  # Debian's multiarch lib/x86_64-linux-gnu included.
  string(REPLACE ";" ", " PC_REQUIRES "${A_PC_REQUIRES}")
  string(REPLACE ";" ", " PC_REQUIRES_PRIVATE "${A_PC_REQUIRES_PRIVATE}")
  string(REPLACE ";" " " PC_LIBS_PRIVATE "${A_PC_LIBS_PRIVATE}")
  set(PC_NAME ${A_OUTPUT})
  set(PC_DESCRIPTION "${A_PC_DESCRIPTION}")
  set(PC_VERSION ${PROJECT_VERSION})
  foreach(v PKM_PC_PREFIX PKM_PC_LIBDIR PKM_PC_INCLUDEDIR)  # left for install time
    set(${v} "@${v}@")
  endforeach()
  configure_file(${PROJECT_SOURCE_DIR}/cmake/pkg-config.pc.in ${CMAKE_CURRENT_BINARY_DIR}/${A_OUTPUT}.pc.in
                 @ONLY)
  set(PC_TEMPLATE ${CMAKE_CURRENT_BINARY_DIR}/${A_OUTPUT}.pc.in)
  set(PC_OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/${A_OUTPUT}.pc)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/write-pc.cmake.in
                 ${CMAKE_CURRENT_BINARY_DIR}/${n}-write-pc.cmake @ONLY)
  install(SCRIPT ${CMAKE_CURRENT_BINARY_DIR}/${n}-write-pc.cmake COMPONENT dev)
  install(FILES ${PC_OUTPUT} DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endfunction()
