from django.urls import path

from . import views

urlpatterns = [
    path('', views.index, name='index'),
    path('tasks/', views.create_task, name='create-task'),
    path('tasks/<int:pk>/', views.task_detail, name='task-detail'),
    path('<str:room_name>/', views.room, name='room'),
]
