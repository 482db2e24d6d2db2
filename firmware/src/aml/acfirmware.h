/*
 * acfirmware.h: ACPICA's platform configuration for this kernel's firmware crate (selected
 * by build.rs in place of acenv.h's per-OS headers).
 *
 * 64-bit, no C library (ACPICA's own string and formatting functions), ACPICA's own object
 * caches, mutexes as semaphores (ACPI_MUTEX_TYPE left at ACPI_BINARY_SEMAPHORE), and the
 * OS services of src/aml/os.rs.
 */
#ifndef __ACFIRMWARE_H__
#define __ACFIRMWARE_H__

#define ACPI_USE_DO_WHILE_0
#define ACPI_IGNORE_PACKAGE_RESOLUTION_ERRORS

#define ACPI_MACHINE_WIDTH          64
#define COMPILER_DEPENDENT_INT64    long
#define COMPILER_DEPENDENT_UINT64   unsigned long

#define ACPI_FLUSH_CPU_CACHE()
#define ACPI_CACHE_T                ACPI_MEMORY_LIST
#define ACPI_USE_LOCAL_CACHE        1

#ifndef __init
#define __init
#endif
#ifndef __iomem
#define __iomem
#endif
#ifndef __cdecl
#define __cdecl
#endif

#endif /* __ACFIRMWARE_H__ */
