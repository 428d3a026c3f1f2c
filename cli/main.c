/* main.c — placeholder entry until the CLI lands. */
#include "optiq.h"
#include <stdio.h>
int main(void) { printf("optiq %s\n", optiq_version()); return 0; }
