#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>
#include <map>
#include <thread>
#include <memory>
struct Shape { virtual ~Shape() {} virtual double area() const = 0; };
struct Sq : Shape { double s; Sq(double s) : s(s) {} double area() const override { return s * s; } };
std::string thrower(int x);
static std::map<std::string, int> registry = {{"a", 1}, {"b", 2}};
struct Init { Init() { registry["ctor"] = 42; } } init_it;
int main() {
  std::vector<std::unique_ptr<Shape>> v;
  for (int i = 1; i <= 3; i++) v.emplace_back(new Sq(i));
  double t = 0; for (auto &s : v) t += s->area();
  std::cout << "area " << t << " ctor " << registry["ctor"] << std::endl;
  try { thrower(5); } catch (const std::runtime_error &e) { std::cout << "caught " << e.what() << std::endl; }
  try { thrower(-1); } catch (int e) { std::cout << "caught int " << e << std::endl; }
  int sum = 0; std::thread th([&] { for (int i = 0; i < 100; i++) sum += i; }); th.join();
  thread_local int tl = 7; tl++;
  std::cout << "thread sum " << sum << " tl " << tl << std::endl;
  std::cerr << "to cerr" << std::endl;
  return 0;
}
