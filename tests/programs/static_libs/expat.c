#include <expat.h>
#include <stdio.h>
#include <string.h>
static int depth, elements;
static void start(void *u, const char *name, const char **attrs) { (void)u; (void)attrs; elements++; printf("%*s<%s>\n", depth * 2, "", name); depth++; }
static void end(void *u, const char *name) { (void)u; (void)name; depth--; }
int main(void) {
  const char *doc = "<a x='1'><b><c/></b><d>text</d></a>";
  XML_Parser p = XML_ParserCreate(NULL);
  XML_SetElementHandler(p, start, end);
  if (XML_Parse(p, doc, (int)strlen(doc), 1) == XML_STATUS_ERROR) return 1;
  printf("expat elements=%d %s\n", elements, XML_ExpatVersion());
  XML_ParserFree(p);
  return 0;
}
