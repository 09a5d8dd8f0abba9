# SPDX-License-Identifier: MIT
# Debian packages with CPack (`make package`, which configures with CMAKE_INSTALL_PREFIX=/usr so
# that the library lands in Debian's multiarch libdir). One package per install component:
#   libpkmcom0     "lib":  the shared library (Depends from dpkg-shlibdeps; a shlibs file; ldconfig
#                        run by the postinst/postrm CPack writes)
#   libpkmcom-server0 "serverlib": the libuv server's shared library (Depends: libpkmcom0, libuv1)
#   libpkmcom-dev  "dev":  headers, both static libraries, both .so links, pkmcom.pc and
#                        pkmcom-server.pc, the CMake package (pkmcom::pkmcom, pkmcom::server)
#   pkmcom         "tool": the pkmcom tool and its man page
# PKM_DEBIAN=ON (set by make package) adds what Debian policy asks: /usr/share/doc/<pkg>/copyright
# and a gzipped man page.
if(PKM_DEBIAN)  # /usr/share/doc/<package>/copyright, in each package
  install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/libpkmcom${PROJECT_VERSION_MAJOR}
          RENAME copyright COMPONENT lib)
  install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/libpkmcom-server${PROJECT_VERSION_MAJOR}
          RENAME copyright COMPONENT serverlib)
  install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/libpkmcom-dev
          RENAME copyright COMPONENT dev)
  install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/pkmcom
          RENAME copyright COMPONENT tool)
else()
  install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT dev)
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pkmcom)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the libpkmcom developers")
set(CPACK_PACKAGE_CONTACT "the libpkmcom developers <libpkmcom@invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "PkmCom/TCP, the PokemonSMS packet protocol over encrypted TCP")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
# Install with DESTDIR so that CMAKE_INSTALL_PREFIX is the real prefix while installing (the
# pkg-config file records it).
set(CPACK_SET_DESTDIR ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL lib serverlib dev tool)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.invalid/libpkmcom")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(PKM_LIB_PACKAGE libpkmcom${PROJECT_VERSION_MAJOR})
set(CPACK_DEBIAN_LIB_PACKAGE_NAME ${PKM_LIB_PACKAGE})
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIB_DESCRIPTION
    "PkmCom/TCP library (shared)\n libpkmcom implements PkmCom/TCP: an RSA-2048 handshake and AES-256-CBC packets over TCP.")

set(PKM_SERVER_PACKAGE libpkmcom-server${PROJECT_VERSION_MAJOR})
set(CPACK_DEBIAN_SERVERLIB_PACKAGE_NAME ${PKM_SERVER_PACKAGE})
set(CPACK_DEBIAN_SERVERLIB_PACKAGE_SECTION libs)
# dpkg-shlibdeps finds libpkmcom.so.0 in the build tree (it is not installed yet) but no shlibs for
# it there, so the dependency on the core's package is written here; the rest it works out.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${CMAKE_BINARY_DIR})
set(CPACK_DEBIAN_SERVERLIB_PACKAGE_DEPENDS "${PKM_LIB_PACKAGE} (= ${PROJECT_VERSION})")
set(CPACK_DEBIAN_SERVERLIB_DESCRIPTION
    "PkmCom/TCP server library on libuv (shared)\n libpkmcom-server: a PkmCom/TCP server on libuv, on top of libpkmcom.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libpkmcom-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "${PKM_LIB_PACKAGE} (= ${PROJECT_VERSION}), ${PKM_SERVER_PACKAGE} (= ${PROJECT_VERSION}), libssl-dev (>= 3.0), libjansson-dev, libuv1-dev, pkgconf | pkg-config")
set(CPACK_DEBIAN_DEV_DESCRIPTION
    "PkmCom/TCP library (development files)\n Headers, static libraries, pkg-config files and CMake package of libpkmcom and libpkmcom-server.")

set(CPACK_DEBIAN_TOOL_PACKAGE_NAME pkmcom)
set(CPACK_DEBIAN_TOOL_PACKAGE_SECTION net)
set(CPACK_DEBIAN_TOOL_DESCRIPTION
    "PkmCom/TCP command-line tool\n pkmcom: keys, a server (echo or relay), a client sending typed packets, and a demo.")

include(CPack)
