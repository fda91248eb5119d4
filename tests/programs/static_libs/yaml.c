#include <yaml.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  const char *doc = "a: 1\nb: [x, y, z]\nc: {d: e}\n";
  yaml_parser_t p; yaml_event_t e; int scalars = 0, done = 0;
  yaml_parser_initialize(&p);
  yaml_parser_set_input_string(&p, (const unsigned char *)doc, strlen(doc));
  while (!done) {
    if (!yaml_parser_parse(&p, &e)) return 1;
    if (e.type == YAML_SCALAR_EVENT) { scalars++; printf("%s ", e.data.scalar.value); }
    done = e.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&e);
  }
  yaml_parser_delete(&p);
  printf("\nyaml scalars=%d\n", scalars);
  return 0;
}
